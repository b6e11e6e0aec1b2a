"""`measure profile`: a model's serving profile, the SmolVLM2 test plan's phases 3-4 on the
real server. For each model it starts `serve run` itself (a cold start and the time to
ready need a fresh server; the other dtype needs a second one) and measures, each with its
number: time to ready, latency per input kind (text, one image, videos of 4 ... 64 frames;
cold, then warm), peak memory of the server's processes per input kind, throughput against
requests in flight, memory after n and 10 n requests (a leak check), repeatability
(temperature 0; 0.7 with and without a seed), edge inputs (each with what happened and
whether the server still answered) and, on a second server in another dtype, latency and
the agreement of answers. Every request is new to the server (a fresh media uuid and
cache salt: nothing answered from a cache). profile.json keeps what was measured;
profile.md, its plots and the targets' verdicts are computed from it alone."""
