//! The status page's style and scripts: written here, no build chain, no
//! library. Each runs under the answer's CSP nonce; text from hosts only
//! ever reaches the DOM through `textContent`, or as HTML the server
//! rendered (and escaped) itself.

/// The style of every page. Colour is never the only signal: every state
/// also has a word and a mark. `:focus-visible` outlines keep keyboard
/// users' place; under 40em the grid and tables narrow to a phone.
pub const STYLE: &str = r#"
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;padding:0 .8em 2em;color:#222;background:#fafafa;max-width:80em}
h1{font-size:1.3em;margin:.6em 0}h1 a{color:inherit;text-decoration:none}h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid #ccc}h3{font-size:1em;margin:.8em 0 .3em}
a{color:#0b4f9c}a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,summary:focus-visible,textarea:focus-visible{outline:3px solid #1a73e8;outline-offset:2px}
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{text-align:left;padding:.2em .4em;border-bottom:1px solid #eee;vertical-align:top}
.RUNNING,.ok,.passing,.completed,.h-passing{color:#17692b}.FAILED,.failed,.critical,.aborted,.interrupted,.h-critical{color:#b00020;font-weight:bold}
.STARTING,.RESTARTING,.running,.skipped,.h-warning{color:#8a4d00}.STOPPED{color:#666}.maint{background:#fff3cd}
details{margin:.3em 0;background:#fff;border:1px solid #ddd;border-radius:4px;padding:.3em .5em}summary{cursor:pointer}
header{display:flex;justify-content:space-between;align-items:center;flex-wrap:wrap;gap:.5em}header nav a{margin-right:.8em}
pre{white-space:pre-wrap;word-break:break-word;background:#fff;border:1px solid #ddd;padding:.5em;font-size:.85em;max-height:30em;overflow:auto}
input,select,button,textarea{font-size:1em;padding:.3em}.err{color:#b00020}.small{font-size:.8em;color:#555}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.counts{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.4em;margin:.4em 0}.count{padding:.2em .6em;border-radius:1em;border:1px solid #ccc;background:#fff}
.tiles{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(11em,1fr));gap:.4em}
.tile a{display:flex;flex-direction:column;padding:.4em .5em;border-radius:4px;border:1px solid #bbb;color:#111;text-decoration:none;min-height:4.2em;border-left-width:.5em}
.tile a:hover{filter:brightness(.95)}.tile .word{font-size:.8em;text-transform:uppercase;letter-spacing:.03em}.tile .small{color:#333}
.st-passing a,.badge.st-passing,.count.st-passing{background:#e3f4e6;border-color:#2e7d32}.st-warning a,.badge.st-warning,.count.st-warning{background:#fff4d6;border-color:#b26a00}
.st-critical a,.badge.st-critical,.count.st-critical{background:#fde3e3;border-color:#b00020}.st-maintenance a,.badge.st-maintenance,.count.st-maintenance{background:#e8eaf6;border-color:#3949ab}
.st-unreachable a,.badge.st-unreachable,.count.st-unreachable{background:#eee;border-color:#555;border-style:dashed}
.badge{font-size:.75em;padding:.1em .5em;border:1px solid;border-radius:1em;vertical-align:middle}
.filter{display:flex;flex-wrap:wrap;gap:.4em;align-items:center;margin:.4em 0}.pager{margin:.6em 0}.pager a{margin:0 .4em}
.maint-form{display:inline-flex;gap:.3em;flex-wrap:wrap;align-items:center}
.diff .add{color:#17692b;background:#e6ffec}.diff .del{color:#b00020;background:#ffebe9}.diff .hunk{color:#0b4f9c}.diff .hdr{font-weight:bold}
progress{width:100%;height:1.1em}.bars{display:grid;grid-template-columns:minmax(8em,auto) 1fr auto;gap:.2em .6em;align-items:center}
.tl-wrap{overflow-x:auto}.timeline{width:100%;min-width:36em;height:auto;background:#fff;border:1px solid #ddd}
textarea.md{width:100%;min-height:8em;font-family:monospace;font-size:.8em}
@media (max-width:40em){td,th{padding:.2em}.wide{display:none}.tiles{grid-template-columns:repeat(auto-fill,minmax(8.5em,1fr))}body{padding:0 .4em 2em}}
"#;

/// Every page's script: the CSRF token for changes, and log out.
pub const COMMON_SCRIPT: &str = r#"
const csrf=document.querySelector('meta[name=csrf-token]').content;
document.getElementById('logout').addEventListener('submit',ev=>{ev.preventDefault();fetch('/logout',{method:'POST',headers:{'X-CSRF-Token':csrf}}).then(()=>location.assign('/'));});
"#;

/// The fleet page's script: new jobs appear (GET /job every 2 s), a
/// running job's results arrive over its event stream, retry buttons,
/// and the dry-run form, whose answer is the server's HTML of the plan.
pub const SCRIPT: &str = r#"
(function(){
const tbody=document.querySelector('#jobs tbody');
const following=new Set();
function li(r){const e=document.createElement('li');e.className='result '+r.status;e.dataset.host=r.hostname;
 e.textContent=r.hostname+': '+r.step+' '+r.status+(r.error?' ('+r.error+')':'');
 if(r.logs&&r.logs.length){const p=document.createElement('pre');p.className='logs';
  p.textContent=r.logs.map(l=>l.timestamp+' '+l.priority+' '+l.unit+(l.pid?' pid='+l.pid:'')+': '+l.message).join('\n');e.appendChild(p);}
 return e;}
function setOutcome(tr,o){tr.dataset.outcome=o;const c=tr.querySelector('.outcome');c.textContent=o;c.className='outcome '+o;}
function row(j){let tr=document.getElementById('job-'+j.job_id);if(tr)return tr;
 tr=document.createElement('tr');tr.id='job-'+j.job_id;tr.dataset.job=j.job_id;
 for(const [cls,text] of [['',''],['',j.playbook],['wide',j.started_at],['outcome',''],['','']]){
  const td=document.createElement('td');if(cls)td.className=cls;td.textContent=text;tr.appendChild(td);}
 const a=document.createElement('a');a.href='/page/job/'+encodeURIComponent(j.job_id);const code=document.createElement('code');code.textContent=j.job_id.slice(0,8);a.appendChild(code);tr.firstChild.appendChild(a);
 const ul=document.createElement('ul');ul.className='results';tr.lastChild.appendChild(ul);
 setOutcome(tr,j.outcome);tbody.insertBefore(tr,tbody.firstChild);return tr;}
function follow(tr){const id=tr.dataset.job;if(following.has(id))return;following.add(id);
 const ul=tr.querySelector('.results');const es=new EventSource('/job/'+encodeURIComponent(id)+'/events');
 let n=0;es.addEventListener('result',ev=>{const r=JSON.parse(ev.data);n++;
  if(n>ul.children.length)ul.appendChild(li(r));});
 es.addEventListener('done',ev=>{setOutcome(tr,JSON.parse(ev.data).outcome);es.close();});
 es.onerror=()=>{es.close();following.delete(id);};}
function poll(){fetch('/job?limit=20',{credentials:'same-origin'}).then(r=>r.ok?r.json():[]).then(js=>{
 for(const j of js.slice().reverse()){const tr=row(j);
  if(j.outcome==='running'){follow(tr);continue;}
  if(following.has(tr.dataset.job))continue;
  const ul=tr.querySelector('.results');for(const r of j.results.slice(ul.children.length))ul.appendChild(li(r));
  setOutcome(tr,j.outcome);}
}).catch(()=>{}).finally(()=>setTimeout(poll,2000));}
document.querySelectorAll('#jobs tr[data-outcome=running]').forEach(follow);
poll();
document.addEventListener('click',ev=>{const b=ev.target.closest('button[data-retry]');if(!b)return;
 b.disabled=true;b.textContent='retrying…';
 fetch('/job/'+encodeURIComponent(b.dataset.retry)+'/retry?wait=0s',{method:'POST',headers:{'X-CSRF-Token':csrf}})
 .then(r=>r.json().then(j=>{b.textContent=r.ok?'retry: '+String(j.job_id).slice(0,8):String(j.details||j.error);}))
 .catch(e=>{b.textContent=String(e);});});
document.addEventListener('click',ev=>{const b=ev.target.closest('button#copy-md');if(!b)return;
 const t=document.getElementById('plan-md').value;
 const done=ok=>{b.dataset.copied=ok?'yes':'no';b.textContent=ok?'Copied':'Select the text below and copy it';};
 if(navigator.clipboard&&navigator.clipboard.writeText){navigator.clipboard.writeText(t).then(()=>done(true),()=>{const a=document.getElementById('plan-md');a.select();done(document.execCommand('copy'));});}
 else{const a=document.getElementById('plan-md');a.select();done(document.execCommand('copy'));}});
const dr=document.getElementById('dryrun');
function showParams(){const name=document.getElementById('runbook').value;
 dr.querySelectorAll('fieldset.params').forEach(f=>{const on=f.dataset.runbook===name;f.hidden=!on;f.disabled=!on;});}
function params(){const out={};dr.querySelectorAll('fieldset.params:not([disabled]) [data-param]').forEach(e=>{
 const t=e.dataset.type;if(t==='boolean'){out[e.dataset.param]=e.checked;return;}
 if(e.value==='')return;out[e.dataset.param]=t==='integer'?Number(e.value):e.value;});return out;}
if(dr){document.getElementById('runbook').addEventListener('change',showParams);showParams();}
if(dr)dr.addEventListener('submit',ev=>{ev.preventDefault();const out=document.getElementById('plan');out.textContent='planning…';
 const name=document.getElementById('runbook').value;const limit=document.getElementById('limit').value.trim();
 const body={params:params()};if(limit)body.limit=limit;
 fetch('/page/dryrun/'+encodeURIComponent(name),{method:'POST',headers:{'X-CSRF-Token':csrf,'Content-Type':'application/json'},body:JSON.stringify(body)}).then(r=>r.text().then(t=>{
  if(r.ok){out.innerHTML=t;return;}
  let m=t;try{const j=JSON.parse(t);m=j.error+': '+j.details;}catch(e){}
  out.textContent='';const p=document.createElement('p');p.className='err';p.textContent=m;out.appendChild(p);})).catch(e=>{out.textContent=String(e);});});
})();
"#;

/// The host page's script: a maintenance toggle posts the change (with
/// the CSRF token) and reloads the page once the server read the host.
pub const HOST_SCRIPT: &str = r#"
document.querySelectorAll('form.maint-form').forEach(f=>f.addEventListener('submit',ev=>{ev.preventDefault();
 const out=f.querySelector('.maint-result');const btn=f.querySelector('button');btn.disabled=true;out.textContent='working…';
 const r=f.querySelector('input[name=reason]');
 const body={host:f.dataset.host,enable:f.dataset.enable==='true',reason:r?r.value:null};if(f.dataset.unit)body.unit=f.dataset.unit;
 fetch('/page/maintenance',{method:'POST',headers:{'X-CSRF-Token':csrf,'Content-Type':'application/json'},body:JSON.stringify(body)})
 .then(x=>x.json().then(j=>{if(x.ok){location.reload();return;}btn.disabled=false;out.textContent=String(j.details||j.error);}))
 .catch(e=>{btn.disabled=false;out.textContent=String(e);});}));
"#;

/// The job page's script: while the job runs, every result on its event
/// stream re-fetches the server's progress and timeline fragment; the
/// cancel button posts a cancel.
pub const JOB_SCRIPT: &str = r#"
(function(){
const main=document.getElementById('job');const id=main.dataset.job;const live=document.getElementById('live');
let pending=false,again=false;
function refresh(){if(pending){again=true;return;}pending=true;
 fetch('/page/job/'+encodeURIComponent(id)+'/live',{credentials:'same-origin'}).then(r=>r.ok?r.text():null).then(t=>{if(t!==null)live.innerHTML=t;})
 .catch(()=>{}).finally(()=>{pending=false;if(again){again=false;refresh();}});}
if(main.dataset.outcome==='running'){
 const es=new EventSource('/job/'+encodeURIComponent(id)+'/events');
 es.addEventListener('result',refresh);
 es.addEventListener('done',ev=>{es.close();main.dataset.outcome=JSON.parse(ev.data).outcome;const c=document.getElementById('cancel');if(c)c.hidden=true;refresh();});
 es.onerror=()=>es.close();}
const c=document.getElementById('cancel');
if(c)c.addEventListener('click',()=>{c.disabled=true;c.textContent='cancelling…';
 fetch('/job/'+encodeURIComponent(id)+'/cancel',{method:'POST',headers:{'X-CSRF-Token':csrf}})
 .then(r=>r.json().then(j=>{c.textContent=r.ok?'cancel asked: hosts in flight finish':String(j.details||j.error);}))
 .catch(e=>{c.textContent=String(e);});});
})();
"#;
