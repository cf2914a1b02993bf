
# The host's GPU compute processes, as nvidia-smi lists them, each with how long it has run
# (seconds) and its cgroup, which names the container it runs in. One nvidia-smi: each call
# starts the driver's library again, the costliest part of reading a host.
echo "@@gpu_apps"
if command -v nvidia-smi >/dev/null 2>&1; then
  apps=$(nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory,process_name --format=csv,noheader,nounits 2>&1)
  rc=$?
  [ -n "$apps" ] && printf '%s\n' "$apps"
  echo "@@gpu_apps_rc $rc"
  echo "@@gpu_owners"
  if [ "$rc" = 0 ]; then
    printf '%s\n' "$apps" | while IFS=', ' read -r pid _; do
      case $pid in *[!0-9]*|'') continue ;; esac
      printf '%s %s %s\n' "$pid" "$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')" "$(tr '\n' ' ' <"/proc/$pid/cgroup" 2>/dev/null)"
    done
  fi
else
  echo "@@gpu_apps_rc absent"
fi
