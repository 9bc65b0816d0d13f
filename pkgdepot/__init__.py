"""pkgdepot: one local depot for the packages of apt, dnf and zypper clients."""

__version__ = "0.1.0"
