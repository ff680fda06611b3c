#!/bin/bash
# The shipped unit under a real systemd. Runs INSIDE a systemd-box (a throw-away container
# whose PID 1 is systemd; cwd /src = this checkout; qc-tail installed and linked as
# /usr/local/bin/qc-tail), started by .ci/run:
#   systemd-box --packages logrotate -s tests/systemd_box/check.sh .
# systemd/qc-tail.service and systemd/qc-tail.logrotate are installed unmodified. Each check
# prints PASS or FAIL; the exit status is 1 if any failed.
set -u
fails=0
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
prop() { systemctl show -P "$1" qc-tail; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
journal() { journalctl -u qc-tail -o cat --no-pager "$@"; }
TOKEN=0123456789abcdef0123456789abcdef
LOGS=/var/log/private/qc-tail

# -- an emulator to follow, the config and the token, the unit and the logrotate snippet
systemd-run -q --unit=qc-emulator --service-type=exec /usr/local/bin/qc-tail emulator \
    --port 8080 --user-id 1234 --api-token $TOKEN --publish-interval 1
for _ in $(seq 100); do journalctl -u qc-emulator -o cat | grep -q QC_BASE_URL && break; sleep 0.1; done
install -d -m 0755 /etc/qc-tail
cat >/etc/qc-tail/config.toml <<'EOF'
[api]
base_url = "http://127.0.0.1:8080/api/v2"
user_id = 1234
timeout = 10
[poll]
interval = 1
max_interval = 2
[state]
dir = "/var/lib/qc-tail"
[discovery]
enabled = true
interval = 5
[output]
stdout = true
directory = "/var/log/qc-tail"
EOF
chmod 0644 /etc/qc-tail/config.toml
install -m 0600 /dev/null /etc/qc-tail/api-token && echo $TOKEN >/etc/qc-tail/api-token
install -m 0644 systemd/qc-tail.service /etc/systemd/system/qc-tail.service
install -m 0644 systemd/qc-tail.logrotate /etc/logrotate.d/qc-tail
systemctl daemon-reload
verify=$(systemd-analyze verify --man=no qc-tail.service 2>&1)
check "systemd-analyze verify prints nothing${verify:+: $verify}" test -z "$verify"

# -- start: READY=1 within the start timeout, STATUS=, lines in the journal
usec() { systemd-analyze timespan "$(prop "$1")" | awk '$1 == "μs:" { print $2 }'; }
limit_ms=$(($(usec TimeoutStartUSec) / 1000))
t=$(now_ms); systemctl start qc-tail; rc=$?; t=$(($(now_ms) - t))
echo "start: rc=$rc after $t ms (TimeoutStartSec: $limit_ms ms)"
check "start returns 0 once READY=1 came, within the start timeout" test "$rc" = 0 -a "$t" -lt "$limit_ms"
check "active (running)" test "$(prop ActiveState)/$(prop SubState)" = active/running
status=$(prop StatusText)
check "STATUS= shows what it follows: '$status'" grep -qE '^following [0-9]+ project' <<<"$status"
P=$(prop MainPID)
sleep 4
log_lines=$(journal _TRANSPORT=stdout | grep -c '^\[')
check "log lines reach journalctl -u qc-tail ($log_lines so far)" test "$log_lines" -gt 0
get() { python3 -c 'import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end="")
except urllib.error.HTTPError as e:
    print(e.code)' "$1" 2>&1; }
metrics=$(get http://127.0.0.1:9464/metrics)
check "/metrics on 127.0.0.1:9464 (the unit's QC_TAIL_METRICS_LISTEN) counts lines delivered" \
    grep -qE '^qc_tail_lines_total\{output="files"\} [1-9]' <<<"$metrics"
check "/healthz says ok" test "$(get http://127.0.0.1:9464/healthz)" = ok
events=$(journal)
check "the journal says started" grep -q '"event": "started"' <<<"$events"
check "the journal says deployment_started" grep -q '"event": "deployment_started"' <<<"$events"
echo "online: $(systemd-analyze security qc-tail --no-pager | tail -1)"
exposure=$(systemd-analyze security qc-tail --no-pager | sed -n 's/.*Overall exposure level for qc-tail.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security qc-tail: $exposure <= 1.5" awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 1.5) }'

# -- logrotate, as shipped: create, then postrotate `systemctl reload` (SIGHUP) reopens
files=$(find $LOGS -name '*.log' | wc -l)
logrotate -f /etc/logrotate.d/qc-tail; rc=$?
sleep 3
rotated=$(find $LOGS -name '*.log.1' | wc -l)
open_old=$(ls -l /proc/"$P"/fd 2>/dev/null | grep -c '\.log\.1$')
open_new=$(ls -l /proc/"$P"/fd 2>/dev/null | grep -c '\.log$')
growing=$(find $LOGS -name '*.log' -size +0 | wc -l)
echo "logrotate -f: rc=$rc; $rotated of $files files rotated; fds: $open_old on *.log.1, $open_new on *.log; $growing new files with lines"
check "logrotate + reload: files reopened by the same process, new lines in the new files" \
    test "$rc" = 0 -a "$rotated" -gt 0 -a "$open_old" = 0 -a "$open_new" -gt 0 -a "$growing" -gt 0 -a "$(prop MainPID)" = "$P"
check "reloaded via ExecReload (journal says so)" grep -q "Reloaded\|Reloading" <<<"$(journalctl -u qc-tail -o cat --since -10s)"

# -- stop: SIGTERM, exit 0 within 2 s
t=$(now_ms); systemctl stop qc-tail; rc=$?; t=$(($(now_ms) - t))
echo "stop: rc=$rc in $t ms, Result=$(prop Result) ExecMainStatus=$(prop ExecMainStatus)"
check "stop: exit 0 within 2 s" test "$rc" = 0 -a "$(prop Result)" = success -a "$(prop ExecMainStatus)" = 0 -a "$t" -lt 2000

# -- a wrong token: exit 77, no restart loop
cp -p /etc/qc-tail/api-token /root/api-token
echo ffffffffffffffffffffffffffffffff >/etc/qc-tail/api-token
systemctl reset-failed qc-tail 2>/dev/null
systemctl start qc-tail 2>/dev/null
sleep 8   # more than RestartSec=: a restart would have happened by now
echo "wrong token: ExecMainStatus=$(prop ExecMainStatus) NRestarts=$(prop NRestarts) $(prop ActiveState)"
check "wrong token: fails with 77 and is not restarted" \
    test "$(prop ExecMainStatus)" = 77 -a "$(prop ActiveState)" = failed -a "$(prop NRestarts)" = 0
journal -n 2 | sed 's/^/  | /'

# -- a missing token file: systemd cannot load the credential (243/CREDENTIALS), says so in
# the journal, does not restart; systemd/README.md explains that message
rm /etc/qc-tail/api-token
systemctl reset-failed qc-tail 2>/dev/null
systemctl start qc-tail 2>/dev/null
sleep 8
message=$(journal -n 20 | grep -o 'Failed to set up credentials: .*' | tail -1)
echo "missing token file: ExecMainStatus=$(prop ExecMainStatus) NRestarts=$(prop NRestarts) $(prop ActiveState)"
echo "  | $message"
check "missing token file: fails with 243/CREDENTIALS, is not restarted" \
    test "$(prop ExecMainStatus)" = 243 -a "$(prop ActiveState)" = failed -a "$(prop NRestarts)" = 0
check "systemd/README.md explains '$message'" grep -qF "$message" systemd/README.md
systemctl reset-failed qc-tail 2>/dev/null
cp -p /root/api-token /etc/qc-tail/api-token

# -- the watchdog, as shipped: a frozen process is killed and restarted
systemctl start qc-tail
P=$(prop MainPID)
wd=$(($(usec WatchdogUSec) / 1000000))
kill -STOP "$P"; t=$(now_ms)
for _ in $(seq $((wd * 2 + 60))); do
    [ "$(prop NRestarts)" -ge 1 ] && [ "$(prop ActiveState)/$(prop SubState)" = active/running ] && break
    sleep 0.5
done
echo "watchdog (WatchdogSec=${wd}s): SIGSTOP pid $P -> pid $(prop MainPID) running after $(($(now_ms) - t)) ms"
journalctl -u qc-tail -o cat --since "-$((wd + 40))s" | grep -E "Watchdog timeout|status=6/ABRT|Scheduled restart" | sed 's/^/  | /'
check "watchdog: the frozen process is killed (SIGABRT) and restarted" \
    sh -c "journalctl -u qc-tail --since -$((wd + 40))s | grep -q 'Watchdog timeout' && test $(prop NRestarts) -ge 1 && test $(prop MainPID) != $P"
systemctl stop qc-tail

echo "checks failed: $fails"
exit $((fails > 0))
