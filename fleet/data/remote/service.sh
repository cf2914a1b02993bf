# A service brought to a state, and started at boot or not, as Ansible's service and
# systemd modules do: with systemd where it runs the host, else the SysV init script.
# $1: the service (-: none, only systemd's daemon-reload); $2: started, stopped, restarted, reloaded or -; $3: enabled yes, no or -;
# $4: daemon-reload first (yes/no); $5: systemd (only with systemd) or auto; $6: check
# (yes: change nothing, say what would change).
# Prints one line: manager=M changed=yes|no active=yes|no enabled=yes|no.
# Exit 3: no systemd where it was asked for; 4: no such service; 5: an action failed.
name=$1; state=$2; enabled=$3; reload=$4; want=$5; check=$6

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  manager=systemd
elif [ "$want" = systemd ]; then
  echo "System has not been booted with systemd as init system (PID 1)" >&2
  exit 3
else
  manager=sysv
fi

act() {
  [ "$check" = yes ] && return 0
  out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; echo "failed: $*" >&2; exit 5; }
}

if [ "$manager" = systemd ]; then
  [ "$reload" = yes ] && act systemctl daemon-reload
  if [ "$name" = - ]; then
    echo "manager=systemd changed=no active=no enabled=no"
    exit 0
  fi
  if ! systemctl cat -- "$name" >/dev/null 2>&1; then
    echo "Could not find the requested service $name: host" >&2
    exit 4
  fi
  is_active() { systemctl is-active --quiet -- "$name"; }
  is_enabled() { systemctl is-enabled --quiet -- "$name" 2>/dev/null; }
  run() {
    case $1 in
      at-boot) act systemctl enable -- "$name" ;;
      not-at-boot) act systemctl disable -- "$name" ;;
      *) act systemctl "$1" -- "$name" ;;
    esac
  }
else
  script=/etc/init.d/$name
  if [ ! -x "$script" ]; then
    echo "Could not find the requested service $name: no $script" >&2
    exit 4
  fi
  is_active() { "$script" status >/dev/null 2>&1; }
  is_enabled() { ls /etc/rc[2345].d/S[0-9][0-9]"$name" >/dev/null 2>&1; }
  run() {
    case $1 in
      at-boot) act update-rc.d "$name" defaults; act update-rc.d "$name" enable ;;
      not-at-boot) act update-rc.d "$name" disable ;;
      *) act "$script" "$1" ;;
    esac
  }
fi

changed=no
active=no; is_active && active=yes
case $state in
  started) [ "$active" = no ] && { run start; changed=yes; active=yes; } ;;
  stopped) [ "$active" = yes ] && { run stop; changed=yes; active=no; } ;;
  restarted) run restart; changed=yes; active=yes ;;
  reloaded)
    if [ "$active" = yes ]; then run reload; else run start; fi
    changed=yes; active=yes ;;
esac
now=no; is_enabled && now=yes
if [ "$enabled" != - ] && [ "$enabled" != "$now" ]; then
  if [ "$enabled" = yes ]; then run at-boot; else run not-at-boot; fi
  changed=yes; now=$enabled
fi
echo "manager=$manager changed=$changed active=$active enabled=$now"
