"""What every HTML report page of the package ends with: a probe a headless browser can read.

After the page has loaded, `<body>` gets `data-images-loaded="decoded/total"` and
`data-overflow-x="px"` (how far the page is wider than the window: 0 when it fits). The
rendering tests open the reports in headless Chromium at 1400 px and read both.
"""

PAGE_PROBE = ("<script>addEventListener('load', () => { const i = [...document.images]; "
              "document.body.dataset.imagesLoaded = i.filter(x => x.complete && x.naturalWidth > 0).length "
              "+ '/' + i.length; document.body.dataset.overflowX = Math.max(0, "
              "document.documentElement.scrollWidth - document.documentElement.clientWidth); });</script>")
