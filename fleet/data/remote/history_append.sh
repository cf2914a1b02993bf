
mkdir -p /var/lib/fleet && cat >> /var/lib/fleet/history.jsonl
