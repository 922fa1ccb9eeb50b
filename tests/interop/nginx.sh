#!/usr/bin/env bash
# Debian's nginx in front of the chat example, with nginx's defaults left on
# (proxy_buffering on, proxy_http_version 1.0): nginx_check.py measures.
set -uo pipefail
HERE=$(dirname "$0")
source "$HERE/lib.sh"
PY=${INTEROP_PYTHON:-python3}

if ! command -v nginx >/dev/null; then
    fail "nginx: installed" "no nginx on PATH"
    exit 1
fi
if ! start_example chat nginx-chat --addr 127.0.0.1:0; then
    fail "nginx: the chat example starts"
    exit 1
fi
chat_pid=$EX_PID chat_url=$EX_URL chat_port=$EX_PORT

work=$(mktemp -d)
chmod 755 "$work" # nginx's workers run as nobody when it is started as root
trap 'kill_started; rm -rf "$work"' EXIT
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log info;
events { worker_connections 256; }
http {
    access_log $work/access.log;
    client_body_temp_path $work/client_body;
    proxy_temp_path $work/proxy;
    fastcgi_temp_path $work/fastcgi;
    uwsgi_temp_path $work/uwsgi;
    scgi_temp_path $work/scgi;
    server {
        listen 127.0.0.1:$port;
        # Everything at nginx's defaults: proxy_buffering on, HTTP/1.0 upstream.
        location / {
            proxy_pass http://127.0.0.1:$chat_port;
        }
        # The control: the same, but deaf to the X-Accel-Buffering header.
        location /ignored/ {
            proxy_ignore_headers X-Accel-Buffering;
            proxy_pass http://127.0.0.1:$chat_port/;
        }
    }
}
EOF
cp "$work/nginx.conf" "$OUT_DIR/nginx.conf"
nginx -e "$work/error.log" -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
STARTED_PIDS+=("$nginx_pid")
proxy="http://127.0.0.1:$port"
if ! wait_until 10 curl -sf -o /dev/null --max-time 1 "$proxy/stats"; then
    fail "nginx: starts and proxies to the chat" "$(cat "$work/error.log")"
    exit 1
fi
pass "nginx: starts and proxies to the chat" "$(nginx -v 2>&1) on $proxy"

"$PY" "$HERE/nginx_check.py" "$proxy" "$chat_url"
[[ $? == 0 ]] || FAILED=$((FAILED + 1))

stop_pid "$nginx_pid" TERM
cp "$work/error.log" "$OUT_DIR/logs/nginx-error.log" 2>/dev/null
cp "$work/access.log" "$OUT_DIR/logs/nginx-access.log" 2>/dev/null
stop_pid "$chat_pid" INT
if [[ $STOP_STATUS == 0 ]]; then pass "chat exits 0 on SIGINT"; else fail "chat exits 0 on SIGINT" "status $STOP_STATUS"; fi
exit $((FAILED > 0))
