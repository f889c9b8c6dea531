#!/usr/bin/env bash
# What a person sees, checked in a real browser (issue 20): renders a quickstart's report.html,
# run/loss.svg and dataset-web/funnel.svg in headless Chromium and checks that the pages load
# without script errors, that every spike marker sits on the drawn raw loss line (marker's
# rendered position vs the raw polyline's point at that step), and that each legend swatch is
# stroked like its series (computed style). Writes screenshots into docs/screenshots/.
#
#   apt-get install -y chromium
#   cargo run -p tokenmill-cli -- quickstart --out /tmp/qs   # or any quickstart directory
#   bash tests/browser/check.sh /tmp/qs
#
# Not part of .ci/run (it needs Chromium and a 4-minute quickstart); the result of its last run
# is in docs/screenshots/README.md.
set -euo pipefail
QS=${1:-tokenmill-quickstart}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHOTS=${SHOTS:-$ROOT/docs/screenshots}
CHROME=${CHROME:-chromium}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$SHOTS"

# The checks, run in the page after it loads; the verdict goes into <pre id=tm-check>.
cat > "$WORK/check.js" <<'JS'
(function () {
  var errors = [];
  window.addEventListener('error', function (e) { errors.push(String(e.message)); });
  window.addEventListener('load', function () {
    var out = [];
    var fail = function (m) { out.push('FAIL ' + m); };
    if (errors.length) fail('script errors: ' + errors.join('; '));
    var svgs = document.querySelectorAll('svg');
    if (!svgs.length) fail('no chart rendered');
    svgs.forEach(function (svg) {
      var r = svg.getBoundingClientRect();
      if (r.width < 100 || r.height < 100) fail('chart rendered ' + r.width + 'x' + r.height);
    });
    var raw = document.querySelector('polyline.raw');
    var markers = document.querySelectorAll('path.spike[data-rolled-back="false"]');
    var checked = 0;
    markers.forEach(function (m) {
      // the triangle's apex is 6 px above its point, its base 3 px below, 5 px either side
      var b = m.getBBox();
      var x = b.x + 5, y = b.y + 6;
      var best = null;
      for (var i = 0; i < raw.points.length; i++) {
        var p = raw.points.getItem(i);
        if (best === null || Math.abs(p.x - x) < Math.abs(best.x - x)) best = p;
      }
      if (!best || Math.abs(best.x - x) > 0.6 || Math.abs(best.y - y) > 0.6)
        fail('marker at step ' + m.dataset.step + ' (' + x + ', ' + y + ') is off the raw line ' +
             (best ? '(' + best.x + ', ' + best.y + ')' : ''));
      checked++;
    });
    var legends = 0;
    document.querySelectorAll('line.legend').forEach(function (l) {
      var s = document.querySelector('polyline.series[data-series="' + l.dataset.series + '"]');
      if (!s) { fail('legend ' + l.dataset.series + ' has no series'); return; }
      var a = getComputedStyle(l), c = getComputedStyle(s);
      ['stroke', 'stroke-width', 'stroke-opacity', 'stroke-dasharray'].forEach(function (k) {
        if (a.getPropertyValue(k) !== c.getPropertyValue(k))
          fail('legend ' + l.dataset.series + ' ' + k + ' ' + a.getPropertyValue(k) +
               ' vs series ' + c.getPropertyValue(k));
      });
      legends++;
    });
    var pre = document.createElement('pre');
    pre.id = 'tm-check';
    pre.textContent = (out.length ? out.join('\n') : 'PASS') + '\nmarkers checked ' + checked +
      ', legend swatches checked ' + legends;
    document.body.appendChild(pre);
  });
})();
JS

# A page: the HTML (or an SVG inlined in one) with the checks in front.
page() {
  local src=$1 name=$2
  {
    echo '<!doctype html><html><head><meta charset="utf-8"><script>'
    cat "$WORK/check.js"
    echo '</script></head><body>'
    if [[ $src == *.html ]]; then sed -e 's/^<!doctype html><html[^>]*><head>//' "$src"; else cat "$src"; fi
    echo '</body></html>'
  } > "$WORK/$name.html"
}

status=0
check() {
  local src=$1 name=$2
  page "$src" "$name"
  local dom
  dom=$("$CHROME" --headless --no-sandbox --disable-gpu --virtual-time-budget=5000 \
    --dump-dom "file://$WORK/$name.html" 2>/dev/null)
  local verdict
  verdict=$(printf '%s' "$dom" | sed -n '/<pre id="tm-check">/,/<\/pre>/p' | sed -e 's/<[^>]*>//g')
  echo "$name: $verdict"
  [[ $verdict == PASS* ]] || status=1
}

check "$QS/run/report.html" report
check "$QS/run/loss.svg" loss
check "$QS/dataset-web/funnel.svg" funnel

shot() {
  "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$3" \
    --screenshot="$SHOTS/$2" "file://$1" 2>/dev/null
}
shot "$(realpath "$QS/run/report.html")" report.png 1200,2600
shot "$(realpath "$QS/run/loss.svg")" loss.png 900,520
shot "$(realpath "$QS/dataset-web/funnel.svg")" funnel.png 1000,620
echo "screenshots in $SHOTS"
exit $status
