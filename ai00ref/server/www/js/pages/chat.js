// Chat: conversations on the left, the open one in the middle (replies stream in), options on the right.
// POST /api/oai/v1/chat/completions with `stream: true`; Stop aborts the fetch and the server frees the slot.

import {api, chunkFinish, chunkText} from "../api.js";
import {UNTITLED, history, loadChats, newChat, saveChats} from "../chats.js";
import {h} from "../dom.js";
import {chatOptions} from "./chat-options.js";

export function mount(container) {
  let {chats, selected} = loadChats();
  let current = chats.find((c) => c.id === selected) || chats[0];
  let controller = null; // the AbortController of the reply being streamed

  const save = () => saveChats(chats, current.id);
  const options = chatOptions(() => current, () => {
    save();
    if (!controller) renderMessages(); // not under a streaming reply
  });
  const list = h("ul", {class: "chat-list-items"});
  const title = h("input", {name: "title", class: "chat-title", oninput: (event) => {
    current.title = event.target.value;
    save();
    renderList();
  }});
  const messages = h("div", {class: "messages", id: "messages"});
  const input = h("textarea", {name: "message", rows: 3, placeholder: "Message (Enter sends, Shift+Enter: new line)",
    onkeydown: (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { // not while an IME composes
        event.preventDefault();
        send();
      }
    }});
  const notice = h("p", {class: "error", id: "chat-error"});
  const sendButton = h("button", {name: "send", class: "primary", type: "button", text: "Send", onclick: () => send()});
  const stopButton = h("button", {name: "stop", class: "danger", type: "button", text: "Stop", hidden: true,
    onclick: () => controller && controller.abort()});

  container.append(h("div", {class: "chat-layout"},
    h("aside", {class: "chat-list"},
      h("button", {name: "new-chat", type: "button", text: "+ New chat", onclick: () => {
        chats.unshift(newChat());
        open(chats[0]);
      }}),
      list),
    h("section", {class: "chat-main"}, h("div", {class: "chat-head"}, title), messages,
      h("div", {class: "composer"}, input, h("div", {class: "composer-buttons"}, sendButton, stopButton)), notice),
    options.element));

  function open(chat) {
    current = chat;
    save();
    title.value = chat.title;
    options.showChat(chat);
    renderList();
    renderMessages();
  }

  function renderList() {
    list.replaceChildren(...chats.map((chat) => h("li", {class: chat === current ? "active" : ""},
      h("span", {class: "chat-name", text: chat.title || UNTITLED, onclick: () => open(chat)}),
      h("button", {class: "icon", type: "button", title: "delete", text: "×", onclick: () => remove(chat)}))));
  }

  function remove(chat) {
    chats = chats.filter((c) => c !== chat);
    if (chats.length === 0) chats.push(newChat());
    open(chat === current ? chats[0] : current);
  }

  function bubble(message) {
    const who = message.role === "user" ? current.names.user : current.names.assistant;
    const meta = message.error ? `error: ${message.error}` : message.meta || "";
    return h("div", {class: `msg ${message.role}`},
      h("div", {class: "who", text: who}),
      h("div", {class: "text", text: message.content}),
      h("div", {class: message.error ? "meta error" : "meta", text: meta}));
  }

  function renderMessages() {
    messages.replaceChildren(...current.messages.map(bubble));
    messages.scrollTop = messages.scrollHeight;
  }

  async function send() {
    const content = input.value.trim();
    if (!content || controller) return;
    let fields;
    try {
      fields = options.read(current);
      notice.textContent = "";
    } catch (error) {
      notice.textContent = error.message;
      return;
    }
    current.messages.push({role: "user", content});
    if (current.title === UNTITLED) current.title = content.slice(0, 40);
    const body = {messages: history(current), ...fields};
    const reply = {role: "assistant", content: "", pending: true};
    current.messages.push(reply);
    input.value = "";
    open(current);
    await streamReply(body, reply, messages.lastElementChild);
  }

  async function streamReply(body, reply, node) {
    const text = node.querySelector(".text");
    const meta = node.querySelector(".meta");
    node.classList.add("streaming");
    controller = new AbortController();
    setBusy(true);
    const started = performance.now();
    let chunks = 0;
    try {
      for await (const chunk of api.chat(body, controller.signal)) {
        const piece = chunkText(chunk);
        if (piece) {
          reply.content += piece;
          text.textContent = reply.content;
          node.dataset.chunks = String(++chunks);
          messages.scrollTop = messages.scrollHeight;
        }
        reply.finish = chunkFinish(chunk) || reply.finish;
      }
    } catch (error) {
      if (error.name === "AbortError") reply.finish = "stopped";
      else reply.error = error.message;
    }
    const seconds = (performance.now() - started) / 1000;
    reply.meta = `${reply.finish || "ended"} · ${chunks} chunks · ${seconds.toFixed(1)} s`;
    delete reply.pending;
    controller = null;
    setBusy(false);
    node.classList.remove("streaming");
    node.dataset.finish = reply.finish || (reply.error ? "error" : "ended");
    meta.textContent = reply.error ? `error: ${reply.error}` : reply.meta;
    meta.classList.toggle("error", Boolean(reply.error));
    save();
  }

  function setBusy(busy) {
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
  }

  open(current);
  return () => {
    if (controller) controller.abort();
    options.close();
  };
}
