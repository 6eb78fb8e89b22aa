"""The zero-downtime bench engine, shared by ``bench/run.py`` and ``nextdeploy demo``.

    target     an isolated site: example-app source, config, deploy root, PM2_HOME, port
    commands   deploy commands as subprocesses, their progress lines time-stamped on arrival
    engine     strategies (nextdeploy, the seed script, pm2 restart), sessions and runs under load
    scenarios  the named cases and which strategy runs which
    baselines  the two baselines, runnable as ``python -m nextdeploy.benchkit.baselines``
    measure    pure figures: steps, windows, latency, cutover, disk usage
    report     per-run figures, results.json, the markdown tables and the target verdicts
    plot       timeline PNGs (matplotlib, optional: ``pip install 'nextdeploy[plot]'``)
    bench      the whole bench

Importing ``engine`` imports the load generator (aiohttp, a core dependency).
"""
