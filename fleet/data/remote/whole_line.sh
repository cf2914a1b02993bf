# A part: receive_whole FILE WHAT puts stdin into FILE, which must end in a newline (what
# fleet sends is one line): a connection cut while it arrives leaves a line without one,
# and then FILE is removed and the program exits 8, saying WHAT arrived cut short.
receive_whole() {
  cat > "$1" || exit 3
  [ "$(tail -c 1 -- "$1" | wc -l)" = 1 ] && return 0
  rm -f -- "$1"; echo "the $2 arrived cut short" >&2; exit 8
}
