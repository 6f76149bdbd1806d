#!/usr/bin/env bash
# Every ZeroMQ socket of a daemon or of the shared library is made by fm_sock_new, which is
# where [security] (CurveZMQ) is applied: a socket made anywhere else would be plain even
# under mode = curve. Fails naming each zsock_new / zsock_new_* / zmq_socket call outside
# shared/svc/fm_sock.c and shared/svc/fm_sec.c (tools/, tests/ and bench/ are not daemons).
# usage: sockets_test.sh SOURCE_DIR
set -uo pipefail
cd "$1"
hits=$(grep -nE '\b(zsock_new(_[a-z]+)?|zmq_socket)\s*\(' broker/*.c aggregator/*.c trainer/*.c \
    evaluator/*.c shared/*/*.c | grep -vE '^shared/svc/fm_(sock|sec)\.c:' || true)
if [ -n "$hits" ]; then
    echo "FAIL: sockets made outside fm_sock_new (they would ignore [security]):"
    echo "$hits"
    exit 1
fi
n=$(grep -cE '\bfm_sock_new\s*\(' broker/*.c aggregator/*.c trainer/*.c evaluator/*.c | awk -F: '{s+=$2} END {print s}')
echo "sockets: every daemon socket is made by fm_sock_new ($n call sites)"
