
if [ -e "$1" ]; then stat -c '%F|%a|%U|%G' "$1"; else echo "absent"; fi
if [ "$2" = content ] && [ -f "$1" ] && exec 3<"$1" &&
    [ "$(stat -L -c %d:%i /proc/self/fd/3)" = "$(stat -c %d:%i -- "$1")" ]; then
    base64 <&3
fi
