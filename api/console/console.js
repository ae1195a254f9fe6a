// The console's entry point: a hash router over the pages (#/jobs, #/jobs/ID, #/new, #/files).
// Signed out, every route shows the sign-in form.

import { credential, signOut } from "./api.js";
import { errorBox, fill } from "./dom.js";
import { jobView } from "./job.js";
import { filesView, jobsView, newJobView, signInView } from "./views.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let generation = 0;
let stopCurrent = null;

async function route() {
  generation += 1;
  const mine = generation;
  const isCurrent = () => mine === generation;
  if (stopCurrent) { stopCurrent(); stopCurrent = null; }
  if (!credential()) {
    nav.hidden = true;
    signInView(main, () => { nav.hidden = false; location.hash = "#/jobs"; route(); });
    return;
  }
  nav.hidden = false;
  const [, page, id] = location.hash.split("/");
  try {
    if (page === "jobs" && id) stopCurrent = jobView(main, decodeURIComponent(id));
    else if (page === "new") await newJobView(main, (jobId) => { location.hash = `#/jobs/${encodeURIComponent(jobId)}`; }, isCurrent);
    else if (page === "files") await filesView(main, isCurrent);
    else await jobsView(main, isCurrent);
  } catch (error) {
    if (!isCurrent()) return;
    // A key that stopped working (revoked, expired) sends the user back to sign in.
    if (error.status === 401) { signOut(); route(); return; }
    fill(main, errorBox(error));
  }
}

document.getElementById("sign-out").addEventListener("click", () => { signOut(); location.hash = ""; route(); });
window.addEventListener("hashchange", route);
route();
