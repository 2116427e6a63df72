// Signing in for the admin routes: the app key ([[listen.app_keys]]) exchanged for a JWT at /api/auth/exchange.
// Asked for only when an admin route answers 401/403 (never with `force_pass = true`).

import {api, setSignIn} from "./api.js";

/** Show the dialog until the key is accepted (-> the token) or the user cancels (-> null). */
function askForKey(reason) {
  const dialog = document.getElementById("login");
  const form = dialog.querySelector("form");
  const error = dialog.querySelector("#login-error");
  dialog.querySelector("#login-reason").textContent = reason;
  error.textContent = "";
  return new Promise((resolve) => {
    async function onClose() {
      if (dialog.returnValue !== "ok") {
        finish(null);
        return;
      }
      try {
        const answer = await api.exchange(form.app_id.value, form.app_secret.value);
        form.app_secret.value = "";
        finish(answer.token);
      } catch (failure) {
        error.textContent = failure.message;
        dialog.returnValue = "";
        dialog.showModal(); // ask again
      }
    }
    function finish(token) {
      dialog.removeEventListener("close", onClose);
      resolve(token);
    }
    dialog.addEventListener("close", onClose);
    dialog.returnValue = ""; // Escape closes without setting it: a stale "ok" would read as a sign-in
    dialog.showModal();
  });
}

export function installSignIn() {
  setSignIn(askForKey);
}
