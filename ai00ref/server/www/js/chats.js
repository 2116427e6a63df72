// Conversations kept in the browser (localStorage): [{id, title, names: {user, assistant}, messages: [...]}].
// A message is {role: "user"|"assistant", content, finish?, error?, meta?}.

import {loadJSON, saveJSON} from "./dom.js";

const CHATS_KEY = "ai00ref.chats";
const SELECTED_KEY = "ai00ref.chats.selected";
export const UNTITLED = "New chat";

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

export function newChat() {
  return {id: newId(), title: UNTITLED, names: {user: "User", assistant: "Assistant"}, messages: []};
}

/** The stored conversations (at least one) and the id of the one last open. */
export function loadChats() {
  const chats = loadJSON(CHATS_KEY, []);
  if (!Array.isArray(chats) || chats.length === 0) return {chats: [newChat()], selected: null};
  for (const chat of chats) chat.messages = chat.messages.filter((m) => !m.pending); // left by a closed tab
  return {chats, selected: localStorage.getItem(SELECTED_KEY)};
}

export function saveChats(chats, selected) {
  saveJSON(CHATS_KEY, chats);
  localStorage.setItem(SELECTED_KEY, selected);
}

/** The messages to send: the history without failed or empty replies. */
export function history(chat) {
  return chat.messages.filter((m) => m.content !== "" && !m.pending).map((m) => ({role: m.role, content: m.content}));
}
