"""summary.html: the fleet matrix as one self-contained page (inline CSS and JS, no network), its
rows rendered here so it reads without JavaScript; a click on a header sorts by that column (again:
the other way), typing in the filter box keeps the rows that contain the text."""

from __future__ import annotations

from interop.support.escape import html as escape  # every text, control characters visible
from typing import Any

from interop.fleet.summary import _size, baseline_markdown, cell_text

CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-top:.8em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;white-space:nowrap}
th{background:#f2f2f2;cursor:pointer;user-select:none}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
tr.passed td.status,tr.resumed td.status{color:#176b1e} td.status{font-weight:600;color:#a31515}
td.ok{background:#eef8ee} td.bad{background:#fbeaea}
input{font-size:14px;padding:3px 6px;width:22em} .muted{color:#777}
"""

JS = """
(function(){
  var table=document.getElementById('matrix'), body=table.tBodies[0];
  var heads=table.tHead.rows[0].cells, filter=document.getElementById('filter');
  function key(row,i){var c=row.cells[i];return c.hasAttribute('data-v')?c.getAttribute('data-v'):c.textContent;}
  function sortBy(i){
    var th=heads[i], asc=!th.classList.contains('asc');
    for(var j=0;j<heads.length;j++){heads[j].classList.remove('asc','desc');}
    th.classList.add(asc?'asc':'desc');
    var rows=Array.prototype.slice.call(body.rows);
    var numeric=rows.every(function(r){var v=key(r,i);return v===''||!isNaN(parseFloat(v));});
    rows.sort(function(a,b){
      var x=key(a,i), y=key(b,i), r;
      if(numeric){x=x===''?Infinity:parseFloat(x);y=y===''?Infinity:parseFloat(y);r=x<y?-1:x>y?1:0;}
      else{r=x.localeCompare(y);}
      return asc?r:-r;});
    rows.forEach(function(r){body.appendChild(r);});
  }
  for(var i=0;i<heads.length;i++){heads[i].addEventListener('click',sortBy.bind(null,i));}
  function apply(){
    var q=filter.value.toLowerCase(), shown=0;
    Array.prototype.forEach.call(body.rows,function(r){
      var hit=r.textContent.toLowerCase().indexOf(q)>=0; r.style.display=hit?'':'none'; if(hit){shown++;}});
    document.getElementById('shown').textContent=shown+' of '+body.rows.length+' models';
  }
  filter.addEventListener('input',apply); apply();
})();
"""


def render(summary: dict[str, Any]) -> str:
    targets, variants = summary["targets"], summary.get("variants", [])
    heads = ["model", "status", "seconds", "peak memory"] + targets + variants + ["error"]
    rows = "\n".join(_row(m, targets, variants) for m in summary["models"])
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n)
    verdict = "PASSED" if summary["passed"] else "FAILED"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>interop build-many: {verdict}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>{CSS}</style></head>
<body>
<h1>interop build-many: {verdict}</h1>
<p>{escape(counts)}{' — INTERRUPTED' if summary['interrupted'] else ''} <span class="muted">interop
{escape(str(summary.get('interop_version')))}, {escape(str(summary.get('created')))}</span></p>
<input id="filter" type="search" placeholder="filter: model, status, error…" autocomplete="off">
<span id="shown" class="muted"></span>
<table id="matrix"><thead><tr>{''.join(f'<th>{escape(h)}</th>' for h in heads)}</tr></thead>
<tbody>
{rows}
</tbody></table>
{_failures(summary)}
{_baseline(summary)}
<script>{JS}</script>
</body></html>
"""


def _row(m: dict[str, Any], targets: list[str], variants: list[str]) -> str:
    cells = [_td(m["name"], cls="name"), _td(m["status"], cls="status"),
             _td(f"{m.get('seconds') or 0:.1f}", m.get("seconds") or 0),
             _td(_size(m.get("peak_rss_bytes")), m.get("peak_rss_bytes") or "")]
    for t in targets:
        cell = m.get("targets", {}).get(t)
        value = "" if not cell or cell.get("rel_l2") is None else f"{cell['rel_l2']:.6e}"
        cells.append(_td(cell_text(cell), value, "ok" if cell and cell["status"] == "ok" else "bad" if cell else ""))
    by_variant = {f"{v['target']}/{v['variant']}": v for v in m.get("variants", [])}
    for key in variants:
        v = by_variant.get(key)
        text = "—" if v is None else f"{'ok' if v.get('passed') else 'failed'} {v.get('psnr_db') or ''}".strip()
        cells.append(_td(text, v.get("psnr_db") if v and v.get("psnr_db") is not None else ""))
    cells.append(_td((m.get("error") or {}).get("signature") or ""))
    return f'<tr class="{escape(m["status"])}" data-model="{escape(m["name"])}">{"".join(cells)}</tr>'


def _td(text: str, value: Any = None, cls: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    if value is not None:
        attrs += f' data-v="{escape(str(value))}"'
    return f"<td{attrs}>{escape(str(text))}</td>"


def _failures(summary: dict[str, Any]) -> str:
    if not summary["failures"]:
        return ""
    items = "".join(f"<li><b>{escape(g['signature'])}</b> ({len(g['models'])}): {escape(', '.join(g['models']))}</li>"
                    for g in summary["failures"])
    return f"<h2>Failures by signature</h2><ul>{items}</ul>"


def _baseline(summary: dict[str, Any]) -> str:
    lines = baseline_markdown(summary.get("baseline"), esc=str)[3:]
    if not lines:
        return ""
    items = "".join(f"<li>{escape(line[2:])}</li>" for line in lines)
    return f"<h2>Against the baseline</h2><ul id=\"baseline\">{items}</ul>"
