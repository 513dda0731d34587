//! The status page's pending plans: each with its diff, who made and
//! approved it, and Approve (for a key other than its maker's) and Apply
//! buttons, which send the page's CSRF token as its other changes do. A
//! section of its own, added after the rest of the page.

use std::fmt::Write;

use crate::engine::plan_store::StoredPlan;
use crate::model::keys::Role;

use super::html::esc;

/// A pending plan as the page shows it.
#[derive(Debug, Clone)]
pub struct PagePlan<'a> {
    /// The stored plan.
    pub plan: &'a StoredPlan,
    /// Approvals its runbook needs now.
    pub needed: u32,
}

/// `page` (a whole status page) with the pending plans' section added at
/// its end; `me` and `role` are the session's key, `nonce` the page's.
pub fn with_plans(page: String, plans: &[PagePlan<'_>], me: &str, role: Role, nonce: &str) -> String {
    let Some(head) = page.strip_suffix("</body></html>") else {
        return page;
    };
    let mut b = head.to_string();
    b.push_str("<h2>Pending plans</h2><div id=\"plans\">");
    if plans.is_empty() {
        b.push_str("<p class=\"small\">none (POST /runbook/NAME/plan makes one)</p>");
    }
    for p in plans {
        let s = p.plan;
        let have = u32::try_from(s.approvals.len()).unwrap_or(u32::MAX);
        let by: Vec<String> = s.approvals.iter().map(|a| esc(&a.key)).collect();
        let _ = write!(
            b,
            "<details class=\"plan\" id=\"plan-{d}\" data-plan=\"{d}\"><summary><code>{short}</code> {rb}: made by {maker} at {at}; approvals {have}/{need}{list}; expires {exp}</summary><pre class=\"diff\">{text}</pre>",
            d = esc(&s.digest),
            short = esc(s.digest.get(..12).unwrap_or(&s.digest)),
            rb = esc(&s.runbook),
            maker = esc(&s.made_by),
            at = esc(&s.made_at),
            need = p.needed,
            list = if by.is_empty() { String::new() } else { format!(" ({})", by.join(", ")) },
            exp = esc(&s.expires_at),
            text = esc(&s.text),
        );
        let mine = s.made_by == me || s.approvals.iter().any(|a| a.key == me);
        if role >= Role::Operate && !mine {
            let _ = write!(b, "<button type=\"button\" data-approve=\"{}\">Approve</button> ", esc(&s.digest));
        }
        if role >= Role::Operate && have >= p.needed {
            let _ = write!(b, "<button type=\"button\" data-apply=\"{}\">Apply</button>", esc(&s.digest));
        }
        b.push_str(" <span class=\"small answer\"></span></details>");
    }
    let _ = write!(b, "</div><script nonce=\"{nonce}\">{SCRIPT}</script></body></html>");
    b
}

/// Approve and Apply: a POST with the session's CSRF token; the answer's
/// words shown beside the button (as text), the page reloaded on success.
const SCRIPT: &str = r#"
(function(){
const csrf=document.querySelector('meta[name=csrf-token]').content;
document.addEventListener('click',ev=>{const b=ev.target.closest('button[data-approve],button[data-apply]');if(!b)return;
 const approve=b.dataset.approve!==undefined;const d=approve?b.dataset.approve:b.dataset.apply;
 const out=b.parentElement.querySelector('.answer');b.disabled=true;
 fetch('/plan/'+encodeURIComponent(d)+(approve?'/approve':'/apply?wait=0s'),{method:'POST',headers:{'X-CSRF-Token':csrf}})
 .then(r=>r.json().then(j=>{out.textContent=r.ok?(approve?'approved':'job '+String(j.job_id)):String(j.details||j.error);
  if(r.ok)setTimeout(()=>location.reload(),800);else b.disabled=false;}))
 .catch(e=>{out.textContent=String(e);b.disabled=false;});});
})();
"#;
