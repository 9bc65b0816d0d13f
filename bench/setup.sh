#!/bin/sh
# Install what bench/cache_bench.py needs, from Debian's packages, without
# leaving any system service running or enabled.
#
#   nginx          origin ("nginx-direct") and the nginx caching proxy
#   apt-cacher-ng  the apt-cacher-ng peer
#   wrk            HTTP load generator (with LuaJIT scripting)
#   curl           single large downloads
#   iproute2       `ip netns` for the MSS 1460 variant
#   procps         ps/pgrep used while debugging (the bench reads /proc itself)
#
# Package installs normally start (and enable) nginx on port 80 and
# apt-cacher-ng on port 3142. We prevent that with a policy-rc.d that denies
# every start while apt-get runs (an existing policy-rc.d is left as it is),
# then disable both units so that they do not start on the next boot either.
# The bench never uses those system instances: it starts private ones on free
# ports of 127.0.0.1 with configuration, cache and logs under a temp dir.
#
# Run as root:  sh bench/setup.sh
set -eu

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (apt-get install)" >&2
    exit 1
fi

POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
cleanup() {
    if [ "$CREATED_POLICY" = 1 ]; then
        rm -f "$POLICY"
    fi
}
trap cleanup EXIT INT TERM

if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from pkgdepot bench/setup.sh\nexit 101\n' > "$POLICY"
    chmod 755 "$POLICY"
    CREATED_POLICY=1
fi

# Was either service running before we started? Then it is not ours to stop.
was_running() {
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$1" 2>/dev/null; then
        return 0
    fi
    [ -n "${2:-}" ] && [ -s "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null
}
NGINX_BEFORE=0
ACNG_BEFORE=0
was_running nginx /run/nginx.pid && NGINX_BEFORE=1
was_running apt-cacher-ng /run/apt-cacher-ng/pid && ACNG_BEFORE=1

export DEBIAN_FRONTEND=noninteractive
# apt-cacher-ng asks (debconf) whether to allow HTTPS tunnels: take the default.
apt-get update -q
apt-get install -y -q --no-install-recommends \
    nginx apt-cacher-ng wrk curl iproute2 procps

# Disable the units so they stay off after a reboot as well.
for svc in nginx apt-cacher-ng; do
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable "$svc" >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1 && [ -e "/etc/init.d/$svc" ]; then
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
done

# If the install started them anyway (no policy-rc.d honoured), stop them by
# service name, but only those that were not running before.
stop_if_ours() {
    # $1 service, $2 was-running-before flag, $3 pid file
    if [ "$2" = 1 ]; then
        return 0
    fi
    if was_running "$1" "$3"; then
        echo "setup.sh: stopping $1, started by the package install"
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$1" 2>/dev/null; then
            systemctl stop "$1" || true
        else
            invoke-rc.d --force "$1" stop 2>/dev/null || service "$1" stop || true
        fi
    fi
}
stop_if_ours nginx "$NGINX_BEFORE" /run/nginx.pid
stop_if_ours apt-cacher-ng "$ACNG_BEFORE" /run/apt-cacher-ng/pid

echo "setup.sh: installed:"
nginx -v 2>&1
dpkg-query -W -f='apt-cacher-ng ${Version}\n' apt-cacher-ng
dpkg-query -W -f='wrk ${Version}\n' wrk
