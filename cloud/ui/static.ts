/**
 * The console's own stylesheet and script, served at /ui/assets/console.{css,js}. Kept as strings in
 * the package (tsc does not copy non-TS files to dist) so the console needs no build step and no CDN.
 */
export const CONSOLE_CSS = `
:root{--fg:#1b1f24;--muted:#59636e;--bg:#fff;--line:#d1d9e0;--accent:#0b5cad;--ok:#1a7f37;--warn:#9a6700;--bad:#c0262d;--wait:#8c959f}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg);overflow-wrap:anywhere}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible{outline:3px solid #f0a500;outline-offset:2px}
header{background:#0d1117;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:center}
header a{color:#fff;text-decoration:none;padding:.25rem .1rem}
header a[aria-current=page]{border-bottom:2px solid #f0a500}
header nav{display:flex;flex-wrap:wrap;gap:.25rem .9rem;flex:1}
header form{margin:0}
header .who{color:#c9d1d9;font-size:.85rem}
main{max-width:1240px;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:.75rem}
.tile{display:block;border:1px solid var(--line);border-radius:6px;padding:.75rem;text-decoration:none;color:var(--fg)}
.tile strong{display:block;font-size:1.8rem}
.tile.attention strong{color:var(--bad)}
table{width:100%;border-collapse:collapse;table-layout:fixed}
th,td{text-align:left;padding:.35rem .4rem;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
th{font-weight:600;color:var(--muted);font-size:.85rem}
.id{font-family:ui-monospace,monospace;font-size:.85rem;overflow-wrap:anywhere}
.muted{color:var(--muted)}
form.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin-bottom:.75rem}
form.filters label{display:flex;flex-direction:column;font-size:.85rem;min-width:0;flex:1 1 130px}
input,select,button{font:inherit;padding:.35rem .5rem;border:1px solid var(--line);border-radius:4px;max-width:100%}
button{background:#f6f8fa;cursor:pointer}
button.primary{background:var(--accent);color:#fff;border-color:var(--accent)}
button.danger{color:var(--bad)}
.bar{display:flex;height:1.4rem;border-radius:4px;overflow:hidden;background:#eaeef2;margin:.2rem 0 .6rem}
.bar span{display:block;height:100%}
.s-installed{background:var(--ok)}.s-desired{background:#54aeff}.s-waiting{background:var(--wait)}
.s-failed,.s-timed_out{background:var(--bad)}.s-quarantined{background:#8250df}.s-held_back,.s-incompatible,.s-superseded{background:var(--warn)}
.legend{display:flex;flex-wrap:wrap;gap:.25rem .9rem;font-size:.85rem}
.legend i{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.25rem;vertical-align:-1px}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;margin:.5rem 0}
.actions form{margin:0}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(300px,100%),1fr));gap:1rem}
.grid2>*{min-width:0}
.chart{min-height:200px;width:100%;overflow:hidden}
.thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:.75rem}
.thumbs figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:.5rem;font-size:.85rem}
.thumbs img{width:96px;height:96px;image-rendering:pixelated;display:block;background:#000}
.pager{display:flex;gap:1rem;margin:.75rem 0}
.ok{color:var(--ok)}
.progress{height:.8rem;border-radius:4px;background:#eaeef2;overflow:hidden;margin:.3rem 0}.progress span{display:block;height:100%;background:var(--accent)}
.quarantine figure{border-color:#8250df}
ol.lineage{margin:.25rem 0;padding-left:1.5rem}
.login{max-width:360px;margin:3rem auto;display:flex;flex-direction:column;gap:.75rem}
.login label{display:flex;flex-direction:column}
.error{color:var(--bad)}
dl.kv{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.25rem 1rem;margin:0}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.8rem;background:#f6f8fa;padding:.5rem}
.sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
@media (max-width:600px){.hide-sm{display:none}header nav{flex-basis:100%}}
`;

/**
 * Draws every `.chart[data-series]` with uPlot ({x: epoch seconds[], series: [{label, values, color?, points?}],
 * y?: [min, max]}; `points` draws markers only) on load
 * and after every htmx swap; redraws at the new width when the window resizes.
 */
export const CONSOLE_JS = `
(function(){
  var colors=['#0b5cad','#c0262d','#1a7f37','#8250df','#9a6700'];
  function draw(el){
    if(el.dataset.drawn)return;
    var d=JSON.parse(el.dataset.series);
    var data=[d.x].concat(d.series.map(function(s){return s.values}));
    var opts={width:Math.max(200,el.clientWidth),height:180,series:[{}].concat(d.series.map(function(s,i){
      var c=s.color||colors[i%colors.length];
      // A marker series (e.g. gate decisions): points only, no line.
      return s.points?{label:s.label,stroke:c,width:0,paths:function(){return null},points:{show:true,size:9,fill:c,stroke:c}}:{label:s.label,stroke:c,width:2,spanGaps:true};
    })),axes:[{},{size:50}],scales:{x:{range:function(u,min,max){return min===max?[min-600,max+60]:[min,max]}},y:d.y?{range:function(){return d.y}}:{}}};
    el.textContent='';
    var u=new uPlot(opts,data,el);
    el.dataset.drawn='1';
    new ResizeObserver(function(){u.setSize({width:Math.max(200,el.clientWidth),height:180})}).observe(el);
  }
  function all(root){(root||document).querySelectorAll('.chart[data-series]').forEach(draw)}
  document.addEventListener('DOMContentLoaded',function(){all()});
  document.addEventListener('htmx:afterSwap',function(e){all(e.target)});
})();
`;
