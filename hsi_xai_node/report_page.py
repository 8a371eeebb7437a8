"""What every HTML report page of the package shares: the block saying what ran, the style, and a probe.

    run_header([("model", "unet_bundled_25pn, card sha256 1a2b..."), ("backend", "..."), ...])

Every report (demo, reliability, fleet) opens with `run_header`: the models and their card hashes, the
detector, backend and precision, the data (drives or bags, frames), the preset and options, the date, how
long it took and the machine, so that no figure below it can be read without its inputs.

`PAGE_STYLE` keeps the pages readable at any width (images never wider than the window, text no smaller
than 13 px, tables and plots that scroll inside their box on a phone instead of shrinking or widening the
page); `PLOT_FONT_PT` is the font size of the pages' plots, drawn at the size they are shown (100 dpi,
class `plot`, never scaled down), so their text is as large as the page's.

After the page has loaded, `<body>` gets `data-images-loaded="decoded/total"`, `data-overflow-x="px"`
(how far the page is wider than the window: 0 when it fits), `data-min-font-px` (the smallest computed
font size of any visible text) and `data-min-plot-scale` (the smallest displayed / natural width of the
images marked `class='plot'`). The rendering tests open the reports in headless Chromium at 1400 px and
at a phone's 390 px and read them.
"""

import html
import time

PAGE_PROBE = ("<script>addEventListener('load', () => { const i = [...document.images]; "
              "document.body.dataset.imagesLoaded = i.filter(x => x.complete && x.naturalWidth > 0).length "
              "+ '/' + i.length; document.body.dataset.overflowX = Math.max(0, "
              "document.documentElement.scrollWidth - document.documentElement.clientWidth); "
              "let f = 1000; for (const el of document.body.querySelectorAll('*')) { "
              "if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue; "
              "if (!el.getClientRects().length) continue; "
              "f = Math.min(f, parseFloat(getComputedStyle(el).fontSize)); } "
              "document.body.dataset.minFontPx = f; "
              "const p = i.filter(x => x.classList.contains('plot') && x.naturalWidth > 0); "
              "document.body.dataset.minPlotScale = p.length ? Math.min(...p.map(x => x.clientWidth / x.naturalWidth)) : 1; "
              "});</script>")

PLOT_FONT_PT = 11  # matplotlib text of the pages' plots: 15 px at 100 dpi, shown at natural size
MIN_TEXT_PX = 13

PAGE_STYLE = ("<meta name='viewport' content='width=device-width, initial-scale=1'>"
              "<style>body{font-family:sans-serif;margin:1em;max-width:1360px;font-size:15px}"
              " img{max-width:100%;height:auto} img.plot{max-width:none} pre{background:#f4f4f4;padding:6px;white-space:pre-wrap;"
              "font-size:13px} td,th{padding:3px 6px;font-size:13px} table{border-collapse:collapse}"
              " .scroll{overflow-x:auto;max-width:100%} .ran td:first-child{font-weight:bold;"
              "white-space:nowrap;vertical-align:top} figcaption{font-size:13px}</style>")


def run_header(rows, title: str = "What ran") -> str:
    """A table of (label, value) rows, escaped: the first block of every report."""
    e = html.escape
    body = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in rows if v not in (None, ""))
    return f"<h2>{e(title)}</h2>" + scroll(f"<table class='ran' border=1>{body}</table>")


def scroll(table_html: str) -> str:
    """A table that scrolls by itself on a narrow screen instead of widening the page."""
    return f"<div class='scroll'>{table_html}</div>"


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def duration_text(seconds: float) -> str:
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 120 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def machine_text(desc: dict) -> str:
    """One line from runtime.backend_choice.machine_description()."""
    versions = ", ".join(f"{k} {v}" for k, v in desc.get("versions", {}).items())
    isa = ", ".join(desc.get("instruction_sets", [])) or "no vector extensions listed"
    return f"{desc.get('cpu') or desc.get('machine', '?')}, {desc.get('cores', '?')} cores ({isa}); {versions}"
