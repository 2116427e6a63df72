// The app shell: the header's navigation (hash routes), the live status line and sign-in for admin routes.
// Each page is a module exporting `mount(container)`, which may return a function called when the page is left.

import {installSignIn} from "./auth.js";
import {startStatus} from "./status.js";
import * as chat from "./pages/chat.js";
import * as continuation from "./pages/continuation.js";
import * as paper from "./pages/paper.js";
import * as settings from "./pages/settings.js";

const PAGES = {chat, continue: continuation, paper, settings};
let unmount = null;

function show() {
  const name = location.hash.slice(1) in PAGES ? location.hash.slice(1) : "chat";
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  if (unmount) unmount();
  const container = document.getElementById("page");
  container.replaceChildren();
  container.className = `page-${name}`;
  unmount = PAGES[name].mount(container) || null;
}

installSignIn();
startStatus(document.getElementById("status"));
window.addEventListener("hashchange", show);
show();
