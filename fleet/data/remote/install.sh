# Install packages with apt, non-interactively, as provisioning a bare server needs.
# $1: seconds to wait for the dpkg lock; $2: the packages (names fleet chose, one word
# each); $3: yes when the engine is among them (then it is enabled, started, and must
# answer; cron, when installed, is started too). Then, per apt repository to add first,
# four arguments: its sources file, its keyring's path, its source ("URL SUITE
# [COMPONENT...]", checked by fleet: no blank inside a word, no bracket) and its signing
# key in base64. The host's configuration files are kept (--force-confold).
# A failure prints apt's own words, removes the repositories this run added, and exits
# non-zero; the packages apt could not install are not there.
timeout=$1; packages=$2; engine=$3
shift 3
added=

id=$(sed -n 's/^ID=//p' /etc/os-release 2>/dev/null | tr -d "\"'")
like=$(sed -n 's/^ID_LIKE=//p' /etc/os-release 2>/dev/null | tr -d "\"'")
case " $id $like " in
  *" debian "*|*" ubuntu "*) ;;
  *) echo "unsupported distribution: ${id:-unknown} (/etc/os-release); fleet installs with apt on Debian and Ubuntu" >&2
     exit 10 ;;
esac
command -v apt-get >/dev/null || { echo "apt-get is missing on a ${id} host" >&2; exit 10; }

fail() {
  # shellcheck disable=SC2086 # fleet's own paths, without blanks
  [ -z "$added" ] || rm -f -- $added
  printf '%s\n' "$2" | grep -v '^\(Reading\|Building\|Hit:\|Get:\|Ign:\|Fetched\)' | tail -n 12 >&2
  echo "$1" >&2
  exit 4
}

while [ "$#" -ge 4 ]; do
  list=$1; keyring=$2; source=$3; key=$4
  shift 4
  mkdir -p /etc/apt/keyrings || fail "cannot make /etc/apt/keyrings" ""
  [ -e "$list" ] || added="$added $list $keyring"
  if ! { printf '%s' "$key" | base64 -d >"$keyring.fleet-new" &&
    chmod 0644 "$keyring.fleet-new" && mv "$keyring.fleet-new" "$keyring"; }; then
    rm -f -- "$keyring.fleet-new"
    fail "cannot write $keyring" ""
  fi
  echo "deb [signed-by=$keyring] $source" >"$list" || fail "cannot write $list" ""
done

export DEBIAN_FRONTEND=noninteractive
set -- -o "DPkg::Lock::Timeout=$timeout" -o Dpkg::Options::=--force-confdef \
  -o Dpkg::Options::=--force-confold -q
out=$(apt-get "$@" update 2>&1) || fail "apt-get update failed (exit $?)" "$out"
updated=$out
# shellcheck disable=SC2086 # one word per package, chosen by fleet
out=$(apt-get "$@" -y --no-install-recommends install $packages 2>&1) ||
  fail "apt-get install $packages failed (exit $?)" "$updated
$out"

# The services among them run now and at every boot (apt may leave them stopped where no
# init answers its postinst, e.g. in a container).
service() {
  if [ -d /run/systemd/system ]; then
    systemctl enable --now "$1" >/dev/null 2>&1
  elif [ -x "/etc/init.d/$1" ]; then
    update-rc.d "$1" defaults >/dev/null 2>&1
    "/etc/init.d/$1" start >/dev/null 2>&1
  fi
}
case " $packages " in *" cron "*) service cron ;; esac
[ "$engine" = yes ] || exit 0
service docker
i=0
while [ "$i" -lt 60 ]; do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1; i=$((i + 1))
done
echo "the engine was installed but does not answer after 60 s (docker info fails)" >&2
exit 5
