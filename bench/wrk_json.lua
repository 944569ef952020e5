-- wrk script: print the summary as one JSON line (keys as bench/c/echo_client).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"ops": %d, "total_ops": %d, "duration": %.6f, "p50_us": %.1f, "p99_us": %.1f, ' ..
    '"errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
