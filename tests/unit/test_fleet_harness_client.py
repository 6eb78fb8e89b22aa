"""The page-then-chunks client of the fleet harness (tests/support/fleet.py): what it reads from a page and
how it counts answers (its run against real hosts is tests/integration/test_fleet_harness.py)."""

from __future__ import annotations

from support.fleet import Answer, Visit, Visits, static_urls

# The head of a page as `next build` (app router) renders it.
PAGE = (
    '<!DOCTYPE html><html lang="en"><head><meta charSet="utf-8"/>'
    '<link rel="preload" href="/_next/static/media/e4af272ccee01ff0-s.p.woff2" as="font" crossorigin="" '
    'type="font/woff2"/>'
    '<link rel="stylesheet" href="/_next/static/css/app/layout.css?dpl=r7&amp;v=1" data-precedence="next_static"/>'
    '<link rel="preload" as="script" fetchPriority="low" href="/_next/static/chunks/webpack-a1b2.js?dpl=r7"/>'
    '<script src="/_next/static/chunks/fd9d1056-c3d4.js?dpl=r7" async=""></script>'
    '<script src="/_next/static/chunks/webpack-a1b2.js?dpl=r7" async=""></script>'
    "<script src='/_next/static/chunks/main-app-e5f6.js?dpl=r7' async></script>"
    '<link rel="icon" href="/favicon.ico"/><script src="https://example.com/analytics.js"></script>'
    '</head><body><script>self.__next_f.push([1,"static/chunks/app/page-0a1b.js"])</script></body></html>'
)


def test_the_static_files_a_page_references_each_once_in_order() -> None:
    assert static_urls(PAGE) == [
        "/_next/static/media/e4af272ccee01ff0-s.p.woff2",
        "/_next/static/css/app/layout.css?dpl=r7&v=1",
        "/_next/static/chunks/webpack-a1b2.js?dpl=r7",
        "/_next/static/chunks/fd9d1056-c3d4.js?dpl=r7",
        "/_next/static/chunks/main-app-e5f6.js?dpl=r7",
    ]
    assert static_urls("<html><body>no assets</body></html>") == []


def test_every_answer_but_a_200_counts_and_releases_are_told_apart() -> None:
    visits = Visits([
        Visit(Answer("/", 200, "r2"), [Answer("/a.js", 200, "r1"), Answer("/b.js", 200, "r2")]),
        Visit(Answer("/", 200, "r1"), [Answer("/a.js", 404, "r2"), Answer("/b.js", None, None, "ConnectionReset")]),
        Visit(Answer("/", 502, None)),
    ])
    assert [(answer.url, answer.status) for answer in visits.not_ok()] == [("/a.js", 404), ("/b.js", None), ("/", 502)]
    assert visits.chunks_fetched() == 4
    assert visits.page_releases() == {"r2": 1, "r1": 1}
    assert visits.chunk_releases() == {"r1": 1, "r2": 1}  # of the 200s
    assert visits.across_releases() == 2  # r2's page with r1's a.js, r1's page with r2's 404
