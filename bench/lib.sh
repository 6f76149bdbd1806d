# bench/lib.sh: what the benchmark scripts share (sourced, not run).

# fm_bench_scrape_cpu PORT FILE: every 2 s, the process_cpu_seconds_total of the daemon
# whose /metrics listens on 127.0.0.1:PORT into FILE (the last value read stays); run it in
# the background and kill it when the run ends.
fm_bench_scrape_cpu() {
    while sleep 2; do
        v=$(curl -s --max-time 1 "http://127.0.0.1:$1/metrics" 2>/dev/null |
            sed -n 's/^process_cpu_seconds_total //p')
        [ -n "$v" ] && echo "$v" >"$2"
    done
}

# fm_bench_machine: "N cores, CPU model, OPENBLAS_CORETYPE=..." for a report's first line.
fm_bench_machine() {
    echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
}
