
# The host's GPU compute processes, as nvidia-smi lists them, each with how long it has run
# (seconds) and its cgroup, which names the container it runs in.
echo "@@gpu_apps"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory,process_name --format=csv,noheader,nounits 2>&1
  echo "@@gpu_apps_rc $?"
  echo "@@gpu_owners"
  for pid in $(nvidia-smi --query-compute-apps=pid --format=csv,noheader,nounits 2>/dev/null); do
    case $pid in *[!0-9]*|'') continue ;; esac
    printf '%s %s %s\n' "$pid" "$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')" "$(tr '\n' ' ' <"/proc/$pid/cgroup" 2>/dev/null)"
  done
else
  echo "@@gpu_apps_rc absent"
fi
