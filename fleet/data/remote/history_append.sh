
umask 002  # shared with the docker group: see lock.sh
mkdir -p /var/lib/fleet || exit 3
# The line arrives in a file of its own and is appended only whole (it ends in a newline):
# a connection cut while it arrives appends nothing, so no cut line glues itself to the
# next record. One small write with O_APPEND: records of two runs never interleave.
new=/var/lib/fleet/history.new.$$
trap 'rm -f -- "$new"' EXIT
#@include whole_line.sh
receive_whole "$new" "history line"
cat -- "$new" >> /var/lib/fleet/history.jsonl
