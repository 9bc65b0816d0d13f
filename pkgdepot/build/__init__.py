"""pkgdepot build: OS templates and appliances straight from package lists."""
