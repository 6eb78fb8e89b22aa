"""What a deploy must get right about Next.js itself, beyond "the server starts".

    build      the Next.js build output: required-server-files.json, the tracing root, the app's path
    traces     the ``*.nft.json`` traces: parsing, mapping into the release, escape and existence checks,
               ``[release] include`` / ``exclude``
    traced     ``[release] mode = "traced"``: a release assembled from the traces, without standalone
    skew       keeping ``/_next/static`` of recent releases served by the live one (version skew)
    caches     the shared image cache, and what ISR does with several instances
    envcheck   the host's Node against ``engines`` of ``next``; sharp for ``next/image``
    semver     a small npm-style range matcher for ``engines``
    smoke      ``[health] smoke`` routes and one static asset, requested during the preflight
    prepare    the one call the builder makes once the release's files are in place

Pure functions decide (unit-tested); the few functions that touch the disk say so in their docstring.
"""
