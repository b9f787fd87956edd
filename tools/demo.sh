#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds Cistern, installs it on this machine (under /usr, where the system bus and polkit
# look for it), makes the system bus see the new service, then creates a pool and a volume
# with cisternctl. Run it as root from the top of the source tree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pool_dir=/var/tmp/cistern-demo

if [ "$(id -u)" -ne 0 ]; then
        echo "Run this as root: sudo $0" >&2
        exit 1
fi

bash ./tools/install-deps.sh

echo "==> Building into ./build and installing under /usr"
setup_args=(--prefix=/usr --sysconfdir=/etc --localstatedir=/var)
if [ -f build/meson-private/coredata.dat ]; then
        meson setup --reconfigure build "${setup_args[@]}"
else
        meson setup build "${setup_args[@]}"
fi
meson compile -C build
meson install -C build --no-rebuild

# New rules apply to devices from the next uevent on; without a running udevd there is nothing
# to tell (and attached volumes get no /dev/cistern links until one runs).
if udevadm control --ping >/dev/null 2>&1; then
        echo "==> Making udev load cistern's rules"
        udevadm control --reload
fi

bus_call() {
        dbus-send --system --print-reply --dest=org.freedesktop.DBus \
                /org/freedesktop/DBus "org.freedesktop.DBus.$1" "${@:2}"
}

echo "==> Making the system bus load the new service"
if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        if systemctl is-active --quiet dbus.service; then
                systemctl reload dbus.service
        else
                systemctl start dbus.service
        fi
        # An instance started before this install would keep running the old build.
        systemctl stop cisternd.service 2>/dev/null || true
elif bus_call GetId >/dev/null 2>&1; then
        bus_call ReloadConfig >/dev/null
        # An instance started before this install would keep running the old build.
        if pid=$(bus_call GetConnectionUnixProcessID string:org.cistern.Cistern1 2>/dev/null |
                 awk '/uint32/ { print $2 }') && [ -n "$pid" ]; then
                kill -TERM "$pid" 2>/dev/null || true
                for _ in $(seq 50); do
                        kill -0 "$pid" 2>/dev/null || break
                        sleep 0.1
                done
        fi
else
        # No system bus at all (a container without an init system, for example).
        mkdir -p /run/dbus
        if [ -f /run/dbus/pid ] && ! kill -0 "$(cat /run/dbus/pid)" 2>/dev/null; then
                rm -f /run/dbus/pid
        fi
        dbus-daemon --system --fork
        for _ in $(seq 50); do
                bus_call GetId >/dev/null 2>&1 && break
                sleep 0.1
        done
fi

run() {
        printf '\n# %s\n' "$*"
        "$@"
}

echo
echo "==> A first pool and volume"
# Start from a clean pool; removing a pool only forgets it, its directory is ours to clear.
if cisternctl --no-ask-password list demo >/dev/null 2>&1; then
        cisternctl --no-ask-password pool-remove demo
fi
rm -rf "$pool_dir"
mkdir -p "$pool_dir"

run cisternctl status
run cisternctl pool-create demo dir "path=$pool_dir"
run cisternctl create demo/disk0 1G
run cisternctl resize demo/disk0 2G
run cisternctl pools
run cisternctl list demo
run cisternctl info demo/disk0

cat <<EOT

The volume's image is in $pool_dir. Try 'man cisternctl' for more.
To undo the demo:
  cisternctl remove demo/disk0 && cisternctl pool-remove demo && rm -r $pool_dir
EOT
