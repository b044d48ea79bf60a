"""The stylesheet and the one small script pop3mon adds to pytest-html's page."""

from __future__ import annotations

__all__ = ["SCRIPT", "STYLE"]

# Scoped under .p3m / .p3m-* so pytest-html's own look stays intact. Colours pass WCAG AA
# contrast with dark text; every coloured cell also carries its verdict as text.
STYLE = """
<style>
.p3m, .p3m * { box-sizing: border-box; }
.p3m { color: #1b1b1b; font-size: 13px; margin: 0 0 12px 0; max-width: 1400px; }
.p3m h3 { font-size: 15px; margin: 14px 0 6px; color: #1b1b1b; }
.p3m h4 { font-size: 13px; margin: 10px 0 4px; color: #1b1b1b; }
.p3m-banner { padding: 10px 14px; border-radius: 6px; font-size: 16px; font-weight: bold;
  margin: 4px 0 10px; border-left: 8px solid rgba(0,0,0,.25); }
.p3m-banner small { display: block; font-size: 12px; font-weight: normal; margin-top: 3px; }
.p3m-v-OK { background: #c8e6c9; color: #0f3d12; }
.p3m-v-WARN { background: #ffe08a; color: #4a3500; }
.p3m-v-CRIT { background: #f4a6a6; color: #5c0000; }
.p3m-v-ERROR { background: #d9b3ff; color: #34005c; }
.p3m-v-SKIP { background: #e4e4e4; color: #3d3d3d; }
.p3m-badge { display: inline-block; min-width: 44px; padding: 1px 6px; border-radius: 3px;
  font-weight: bold; font-size: 11px; text-align: center; letter-spacing: .03em; }
/* pytest-html sets min-width: 800px on the body; a phone is 360-430 px wide. Wide tables
   scroll inside their own box instead of the page. */
body { min-width: 0; }
.run-count { display: none; }
#environment td { overflow-wrap: anywhere; }
.p3m-scroll { overflow-x: auto; max-width: 100%; }
.p3m-matrix-wrap { overflow: auto; max-height: 85vh; border: 1px solid #e0e0e0; }
.p3m-facts, .p3m-banner, details.p3m-ct > summary { overflow-wrap: anywhere; }
.p3m-search { margin: 4px 0 6px; }
.p3m-search input { width: min(360px, 70vw); padding: 3px 6px; font-size: 13px; }
.p3m-search span { margin-left: 8px; }
.p3m-matrix { border-collapse: separate; border-spacing: 3px; margin: 0; }
.p3m-matrix th { background: #37474f; color: #fff; padding: 6px 8px; font-size: 12px;
  text-align: left; font-weight: bold; }
.p3m-matrix thead th { position: sticky; top: 0; z-index: 2; }
.p3m-matrix tr.p3m-group-head th { background: #cfd8dc; color: #1b1b1b;
  font-weight: normal; }
.p3m-cell a { color: inherit; text-decoration: none; display: block; }
.p3m tr:target td { outline: 2px solid #0b4f9c; }
.p3m-matrix td, .p3m-matrix tbody th { padding: 6px 8px; vertical-align: top;
  border-radius: 3px; }
.p3m-matrix tbody th { background: #f4f6f7; color: #1b1b1b; font-weight: normal;
  text-align: left; min-width: 150px; }
.p3m-matrix tbody th a { color: #0b4f9c; font-weight: bold; font-size: 13px; }
.p3m-matrix td.p3m-cell { text-align: center; min-width: 92px; font-weight: bold;
  font-size: 13px; cursor: help; }
.p3m-cell small, .p3m-sub { display: block; font-weight: normal; font-size: 11px;
  opacity: .85; }
.p3m-matrix td.p3m-endpoint, .p3m-matrix td.p3m-figures { background: #f4f6f7;
  white-space: nowrap; }
.p3m-matrix td.p3m-problems { background: #fafafa; min-width: 260px; max-width: 560px; }
.p3m-problems ul { margin: 0; padding-left: 16px; }
.p3m-problems li { margin: 0 0 2px; }
.p3m-good { color: #1b5e20; font-weight: bold; }
.p3m-muted { color: #666; }
.p3m-counts { margin: 6px 0; }
.p3m-counts .p3m-badge { font-size: 12px; margin-right: 4px; }
.p3m-facts { color: #333; margin: 4px 0 8px; }
.p3m-facts code { background: #f1f1f1; padding: 0 3px; }
.p3m-legend { color: #444; font-size: 12px; margin: 2px 0 10px; }
.p3m-legend .p3m-badge { min-width: 0; }
.p3m-mark { display: inline-block; margin-left: 6px; padding: 0 5px; border-radius: 3px;
  font-size: 11px; font-weight: bold; color: #fff; }
.p3m-mark-new { background: #c62828; }
.p3m-mark-recovered { background: #2e7d32; }
.p3m-spark { vertical-align: middle; }
.p3m-drift { margin: 2px 0; padding-left: 18px; }
.p3m-news { display: block; font-size: 13px; font-weight: normal; margin-bottom: 2px; }
details.p3m-ct { border: 1px solid #cfd8dc; border-left-width: 8px; border-radius: 4px;
  margin: 6px 0; background: #fff; }
details.p3m-ct.p3m-b-OK { border-left-color: #43a047; }
details.p3m-ct.p3m-b-WARN { border-left-color: #f9a825; }
details.p3m-ct.p3m-b-CRIT { border-left-color: #c62828; }
details.p3m-ct.p3m-b-ERROR { border-left-color: #7b1fa2; }
details.p3m-ct.p3m-b-SKIP { border-left-color: #9e9e9e; }
details.p3m-ct > summary { cursor: pointer; padding: 6px 10px; font-size: 13px;
  color: #1b1b1b; }
details.p3m-ct > summary b { font-size: 14px; }
.p3m-ct-body { padding: 0 12px 10px; }
.p3m-grid { display: flex; flex-wrap: wrap; gap: 8px 28px; }
.p3m-grid > section { flex: 1 1 300px; min-width: min(280px, 100%); }
.p3m table.p3m-kv, .p3m table.p3m-checks { border-collapse: collapse; font-size: 12px; }
.p3m table.p3m-kv th, .p3m table.p3m-kv td, .p3m table.p3m-checks th,
.p3m table.p3m-checks td { border: 1px solid #e0e0e0; padding: 3px 6px; text-align: left;
  vertical-align: top; color: #1b1b1b; }
.p3m table.p3m-kv th, .p3m table.p3m-checks thead th { background: #f4f6f7; }
.p3m table.p3m-kv { width: 100%; table-layout: fixed; }
.p3m table.p3m-kv th { width: 34%; }
.p3m table.p3m-kv td { overflow-wrap: anywhere; }
.p3m table.p3m-checks { width: 100%; }
.p3m table.p3m-checks td:last-child { min-width: 200px; }
.p3m table.p3m-checks td[class^="p3m-v-"] { font-weight: bold; font-size: 11px;
  text-align: center; }
.p3m pre.p3m-transcript { background: #263238; color: #eceff1; padding: 8px; overflow: auto;
  max-height: 320px; font-size: 11px; line-height: 1.35; white-space: pre-wrap; }
.p3m pre.p3m-transcript { color: #a5d6a7; }
.p3m-transcript .p3m-c { color: #ffd54f; }
.p3m-transcript .p3m-end { color: #fff; font-weight: bold; }
.p3m-transcript .p3m-end-fail { color: #ff8a80; }
.p3m-caps { list-style: none; padding: 0; margin: 0; }
.p3m-caps li { padding: 1px 0; }
.p3m-caps .p3m-gone { color: #b71c1c; text-decoration: line-through; }
.p3m-caps .p3m-new { color: #1b5e20; font-weight: bold; }
.p3m-reason-extra { padding: 4px 0; color: #1b1b1b; font-size: 13px; }
#results-table td.col-verdict, #results-table td.col-tier { white-space: nowrap; }
</style>
"""

# Inline (the page fetches nothing): the filter box, and links into the details that open
# the <details> they point into (a closed one has no box to scroll to). Plain ES5-level DOM
# calls; the overview is complete without it.
SCRIPT = """
<script>
(function () {
  "use strict";
  function open(id) {
    var el = id && document.getElementById(id);
    var box = el && el.closest("details");
    if (box && !box.open) { box.open = true; }
    if (box && box.hidden) { box.hidden = false; }
    return el;
  }
  function fromHash() {
    var el = open(decodeURIComponent(location.hash.slice(1)));
    if (el) { el.scrollIntoView(); }
  }
  document.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest('a[href^="#p3m-"]');
    if (a) { open(decodeURIComponent(a.getAttribute("href").slice(1))); }
  });
  window.addEventListener("hashchange", fromHash);
  document.addEventListener("DOMContentLoaded", function () {
    fromHash();
    var box = document.getElementById("p3m-search");
    var input = document.getElementById("p3m-filter");
    var shown = document.getElementById("p3m-shown");
    if (!box || !input) { return; }
    box.hidden = false;
    var rows = document.querySelectorAll("#pop3mon-matrix tr.p3m-row");
    var items = Array.prototype.map.call(rows, function (row) {
      var link = row.querySelector("th a");
      var end = row.querySelector(".p3m-endpoint");
      return {
        row: row,
        group: row.parentNode,
        details: link && document.getElementById(link.getAttribute("href").slice(1)),
        text: [row.getAttribute("data-connection"), row.parentNode.getAttribute("data-server"),
               end ? end.textContent : "", row.getAttribute("data-verdict"),
               row.getAttribute("data-find") || ""]
          .join(" ").toLowerCase()
      };
    });
    input.addEventListener("input", function () {
      var terms = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
      var live = new Set();
      items.forEach(function (it) {
        var hit = terms.every(function (t) { return it.text.indexOf(t) >= 0; });
        it.row.hidden = !hit;
        if (it.details) { it.details.hidden = !hit; }
        if (hit) { live.add(it.group); }
      });
      document.querySelectorAll("#pop3mon-matrix tbody.p3m-group").forEach(function (g) {
        g.hidden = !live.has(g);
      });
      var n = items.filter(function (it) { return !it.row.hidden; }).length;
      shown.textContent = terms.length ? n + " of " + items.length + " shown" : "";
    });
  });
})();
</script>
"""
