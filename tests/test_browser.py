"""The web UI (ai00ref/server/www/) in a real browser: Debian's headless Chromium driven by Playwright.

The server runs on loopback over the generated demo model (the reference engine), with `force_pass = false`, so
admin actions go through the UI's sign-in. The tests run in file order on one page, as a person would use it:
chat (a streamed reply, samplers, a state, stop, BNF and JSON-schema boxes, kept conversations), continuation,
paper writing, then settings (sign in, load another model quantized, export a prefab, cancel a sign-in) and a chat
with the new model. Then a server with `force_pass = true` and no model, and the shipped Config.toml (the project's
trained model). Screenshots go to $AI00REF_TEST_ARTIFACTS (default tests/artifacts/, ignored by git).

    make test-browser      # installs chromium (apt, as root) and playwright if missing
    pytest -m browser tests/test_browser.py

Playwright never downloads a browser here: it starts /usr/bin/chromium. Without chromium or playwright the tests
skip, except under CI=true, where they fail.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

import ai00ref
from ai00ref.server.app import RUNTIME, make_app
from ai00ref.server.config import config_from_dict, load_config, resolve_config_paths
from ai00ref.server.runtime import DEMO_MODEL, DEMO_SPEC, start_runtime
from ai00ref.weights.random_model import RandomModelSpec, write_random_model
from test_server_api import ServerThread

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO / "assets" / "configs" / "Config.toml"
ARTIFACTS = Path(os.environ.get("AI00REF_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
SLOTS = 4
POET_ID = "5f0c3c52-8d8a-4bd4-9a53-0c1f3f6b7a11"
APP_ID, SECRET = "admin", "browser-test-secret"
SMALL_MODEL = "small-v7.st"


def unavailable(reason: str):
    """Skip on a developer box without the browser; fail under CI, where these tests must run."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


# ---- the server ----

def model_folder(folder: Path) -> Path:
    """The demo model (as `serve` makes it with no model configured), a smaller one to load, and a state."""
    write_random_model(RandomModelSpec(**DEMO_SPEC), folder / DEMO_MODEL)
    write_random_model(RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=65536, head_size=16, seed=5),
                       folder / SMALL_MODEL)
    model = ai00ref.load_model(folder / DEMO_MODEL)
    state = model.forward([[33, 44, 55]], model.new_state(1))[1]
    ai00ref.save_state(state, model.info, folder / "poet.state")
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = model_folder(tmp_path_factory.mktemp("models"))
    config = config_from_dict({
        "model": {"path": str(folder), "name": DEMO_MODEL, "max_batch": SLOTS, "token_chunk_size": 32},
        "state": [{"path": str(folder / "poet.state"), "name": "poet", "id": POET_ID}],
        "adapter": {"engine": "ref"},
        "listen": {"force_pass": False, "slot": "browser-test", "app_keys": [{"app_id": APP_ID, "secret_key": SECRET}]},
        "web": {"path": str(folder / "no-such-ui.zip")},  # nothing there: the bundled UI
    })
    server = start_server(make_app(start_runtime(config), config, folder))
    server.folder = folder
    yield server
    server.close()


def start_server(app) -> ServerThread:
    """ServerThread(app), set up from another thread: Playwright's sync API keeps an event loop running in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(ServerThread, app).result()


def runtime_of(served):
    return served.runner.app[RUNTIME]


# ---- the browser ----

@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        unavailable(f"playwright is not installed ({error}): pip install -e '.[test]'")
    if not CHROMIUM.exists():
        unavailable(f"no {CHROMIUM}: apt-get install chromium (make test-browser does, as root)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


def open_page(browser, url: str):
    """A new page at `url`, its JavaScript errors collected in `page.errors`."""
    page = browser.new_page(viewport={"width": 1360, "height": 820})
    page.set_default_timeout(30_000)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("#status:has-text('slots'), #status:has-text('no model')")
    return page


@pytest.fixture(scope="module")
def page(browser, served):
    page = open_page(browser, served.url + "/")
    yield page
    assert page.errors == [], f"JavaScript errors on the page: {page.errors}"
    page.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def set_number(page, selector: str, value) -> None:
    page.fill(selector, str(value))
    page.dispatch_event(selector, "input")


def send_chat(page, text: str):
    """Send `text` and wait for the reply to finish; -> (the request body, the reply's element)."""
    page.fill("textarea[name=message]", text)
    with page.expect_request("**/chat/completions") as request:
        page.click("button[name=send]")
    page.wait_for_selector("#messages .msg.assistant:last-child[data-finish]")
    return request.value.post_data_json, page.locator("#messages .msg.assistant:last-child")


# ---- the UI's pure helpers, run in the page ----

def test_the_helpers(page):
    got = page.evaluate(r"""async () => {
        const dom = await import("./js/dom.js");
        const paper = await import("./js/pages/paper.js");
        const settings = await import("./js/pages/settings.js");
        const sampler = await import("./js/sampler.js");
        const files = [{name: "a.st", info: {version: "V7"}}, {name: "b.prefab", info: null},
                       {name: "c.st", info: null}, {name: "d.state", info: null}, {name: "e.txt", info: null}];
        const kinds = settings.classify(files);
        const options = sampler.defaultOptions(64);
        options.type = "Mirostat";
        return {
            stops: dom.parseLines("\\n\\nUser:\n\nEND\\t"),
            shown: dom.formatLines(["\n\nUser:", "END\t"]),
            headings: paper.headings("1. Intro\n2) Method\n- Results\n\n  Outlook  "),
            kinds: [kinds.models, kinds.loras, kinds.states].map((list) => list.map((f) => f.name)),
            fields: sampler.samplerFields(options),
        };
    }""")
    assert got["stops"] == ["\n\nUser:", "END\t"] and got["shown"] == "\\n\\nUser:\nEND\\t"
    assert got["headings"] == ["Intro", "Method", "Results", "Outlook"]
    assert got["kinds"] == [["a.st", "b.prefab"], ["c.st"], ["d.state"]]
    assert got["fields"] == {"sampler": {"type": "Mirostat", "tau": 3, "rate": 0.1}, "max_tokens": 64}


# ---- chat ----

def test_a_chat_message_gets_a_streamed_reply(page):
    set_number(page, ".chat-options input[name=max_tokens]", 32)
    set_number(page, ".chat-options input[name=seed]", 7)
    body, reply = send_chat(page, "Hello! Who are you?")
    assert body["stream"] is True and body["messages"] == [{"role": "user", "content": "Hello! Who are you?"}]
    assert body["sampler"]["type"] == "Nucleus" and body["max_tokens"] == 32 and body["seed"] == 7
    assert body["names"] == {"user": "User", "assistant": "Assistant"} and "\nUser:" in body["stop"]
    assert reply.get_attribute("data-finish") in ("stop", "length")
    assert int(reply.get_attribute("data-chunks")) >= 2  # shown piece by piece as the chunks came
    assert reply.locator(".text").inner_text().strip()
    shot(page, "chat")


def test_the_state_picker_sends_the_chosen_state(page):
    page.select_option("select[name=state]", label="poet")
    page.select_option("select[name=sampler]", "Mirostat")
    body, reply = send_chat(page, "Write a line about the sea.")
    assert body["state"] == POET_ID and body["sampler"] == {"type": "Mirostat", "tau": 3, "rate": 0.1}
    assert len(body["messages"]) == 3  # the history: user, assistant, user
    assert reply.get_attribute("data-finish") in ("stop", "length")
    page.select_option("select[name=state]", "")
    page.select_option("select[name=sampler]", "Nucleus")


def test_stop_cancels_the_reply_and_frees_the_slot(page, served):
    set_number(page, ".chat-options input[name=max_tokens]", 4000)
    page.fill(".chat-options textarea[name=stops]", "")
    page.dispatch_event(".chat-options textarea[name=stops]", "input")
    page.fill("textarea[name=message]", "Tell me a very long story.")
    page.click("button[name=send]")
    page.wait_for_function("Number(document.querySelector('.msg.assistant.streaming')?.dataset.chunks) >= 3")
    assert runtime_of(served).scheduler.busy() == 1
    page.wait_for_selector(f"#status:has-text('slots 1/{SLOTS}'):has-text('tok/s')")  # the live status line
    shot(page, "chat-streaming")
    page.click("button[name=stop]")
    page.wait_for_selector(".msg.assistant[data-finish=stopped]")
    deadline = time.monotonic() + 10
    while runtime_of(served).scheduler.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime_of(served).scheduler.busy() == 0
    page.wait_for_selector(f"#status:has-text('slots 0/{SLOTS}')")
    page.fill(".chat-options textarea[name=stops]", "\\n\\n\n\\n{user}:")
    page.dispatch_event(".chat-options textarea[name=stops]", "input")
    set_number(page, ".chat-options input[name=max_tokens]", 32)


def test_the_grammar_boxes_constrain_the_reply(page):
    page.fill(".chat-options textarea[name=bnf]", 'start ::= "yes" | "no";')
    page.dispatch_event(".chat-options textarea[name=bnf]", "input")
    page.select_option("select[name=sampler]", "Typical")
    set_number(page, ".chat-options input[name=tau]", 0.9)
    body, reply = send_chat(page, "Is the sea blue?")
    assert body["bnf_schema"] == 'start ::= "yes" | "no";' and "response_format" not in body
    assert body["sampler"]["type"] == "Typical" and body["sampler"]["tau"] == 0.9 and body["sampler"]["top_k"] == 128
    page.select_option("select[name=sampler]", "Nucleus")
    assert reply.locator(".text").inner_text() in ("yes", "no") and reply.get_attribute("data-finish") == "stop"
    page.fill(".chat-options textarea[name=bnf]", "")
    page.dispatch_event(".chat-options textarea[name=bnf]", "input")
    page.fill(".chat-options textarea[name=schema]", '{"type": "object", "properties": {"blue": {"type": "boolean"}}')
    page.dispatch_event(".chat-options textarea[name=schema]", "input")
    page.fill("textarea[name=message]", "Answer as JSON.")
    page.click("button[name=send]")
    page.wait_for_selector("#chat-error:has-text('not JSON')")  # a brace short: nothing is sent
    schema = '{"type": "object", "properties": {"blue": {"type": "boolean"}}, "required": ["blue"]}'
    page.fill(".chat-options textarea[name=schema]", schema)
    page.dispatch_event(".chat-options textarea[name=schema]", "input")
    body, reply = send_chat(page, "Answer as JSON.")
    assert body["response_format"]["json_schema"]["schema"] == json.loads(schema) and "bnf_schema" not in body
    assert isinstance(json.loads(reply.locator(".text").inner_text())["blue"], bool)
    page.fill(".chat-options textarea[name=schema]", "")
    page.dispatch_event(".chat-options textarea[name=schema]", "input")


def test_conversations_and_their_names_are_kept_in_the_browser(page):
    page.click("button[name=new-chat]")
    page.fill("input[name=assistant_name]", "Poet")
    page.dispatch_event("input[name=assistant_name]", "input")
    body, reply = send_chat(page, "A haiku, please.")
    assert body["names"]["assistant"] == "Poet" and len(body["messages"]) == 1
    assert reply.locator(".who").inner_text() == "Poet"
    page.reload()
    page.wait_for_selector(".chat-list-items li")
    assert page.locator(".chat-list-items li").count() == 2
    assert page.locator(".msg.assistant .who").first.inner_text() == "Poet"
    page.click(".chat-list-items li:nth-child(2) .chat-name")
    assert page.locator(".msg").count() == 10  # the first chat: five questions and their replies
    shot(page, "chat-conversations")


# ---- continuation and paper ----

def test_continuation_streams_into_the_text(page):
    page.click("#nav a[data-page=continue]")
    page.select_option("select[name=preset]", "Q & A")
    start = page.input_value("textarea[name=text]")
    assert start.startswith("Question:")
    set_number(page, ".side input[name=max_tokens]", 40)
    page.click("button[name=continue]")
    page.wait_for_selector("#continuation-status:has-text('chunks')")
    text = page.input_value("textarea[name=text]")
    assert text.startswith(start) and len(text) > len(start)
    shot(page, "continuation")


def test_paper_sections_are_written_in_parallel(page, served):
    page.click("#nav a[data-page=paper]")
    page.fill("input[name=title]", "Recurrent networks that read like transformers")
    set_number(page, ".side input[name=max_tokens]", 40)
    page.click("button[name=outline]")
    page.wait_for_selector("#paper-status:has-text('outline:')")
    assert page.input_value("textarea[name=outline]").startswith("1.")
    page.fill("textarea[name=outline]", "1. Introduction\n2. The recurrence\n3. Experiments")
    page.click("button[name=write]")
    page.wait_for_function("[...document.querySelectorAll('.paper-section')].every("
                           "(card) => card.dataset.finish || card.querySelector('.text').textContent)")
    shot(page, "paper-writing")  # while the sections stream in together (most likely)
    page.wait_for_selector(".paper-section[data-finish] >> nth=2")
    page.wait_for_selector("#paper-status:has-text('in parallel')")
    cards = page.locator(".paper-section")
    times = [(float(cards.nth(i).get_attribute("data-first")), float(cards.nth(i).get_attribute("data-ended")))
             for i in range(3)]
    assert [cards.nth(i).locator("h4").inner_text() for i in range(3)] == [
        "Introduction", "The recurrence", "Experiments"]
    # every section had its first text before any had ended: the server ran them together, not one by one
    assert max(first for first, _ in times) < min(ended for _, ended in times)
    shot(page, "paper")


# ---- settings ----

def test_settings_signs_in_and_loads_another_model(page, served):
    page.click("#nav a[data-page=settings]")
    page.wait_for_selector(f"#model-files input[value='{SMALL_MODEL}']")
    assert page.locator("#model-info").inner_text().count(DEMO_MODEL) == 1
    page.check(f"#model-files input[value='{SMALL_MODEL}']")
    page.fill("input[name=max_batch]", "2")
    page.fill("input[name=quant]", "1")
    page.select_option("select[name=quant_type]", "Int8")
    page.click("button[name=load]")
    page.wait_for_selector("dialog#login[open]")  # force_pass = false: the app key is asked for
    page.fill("dialog input[name=app_id]", APP_ID)
    page.fill("dialog input[name=app_secret]", "wrong")
    page.click("dialog button[value=ok]")
    page.wait_for_selector("#login-error:has-text('NO-Match')")
    page.fill("dialog input[name=app_secret]", SECRET)
    page.click("dialog button[value=ok]")
    page.wait_for_selector("#settings-message.ok:has-text('loaded')")
    runtime = runtime_of(served)
    assert runtime.model_path.name == SMALL_MODEL and runtime.scheduler.max_batch == 2
    assert (runtime.info.quant_layers, runtime.info.quant_type) == (1, "int8")
    page.wait_for_selector(f"#model-info:has-text('{SMALL_MODEL}')")
    page.wait_for_selector("#status:has-text('slots 0/2')")
    page.fill("input[name=export_path]", "small.prefab")
    page.click("button[name=save]")
    page.wait_for_selector("#settings-message.ok:has-text('exported')")
    page.wait_for_selector("#model-files input[name=model][value='small.prefab']")  # listed as a model to load
    assert (served.folder / "small.prefab").is_file()
    page.click("button:has-text('Sign out')")
    page.click("button[name=unload]")
    page.wait_for_selector("dialog#login[open]")
    page.keyboard.press("Escape")  # cancelled: the model stays
    page.wait_for_selector("#settings-message.error:has-text('token')")
    assert runtime_of(served) is runtime
    shot(page, "settings")


def test_the_chat_answers_with_the_new_model(page):
    page.click("#nav a[data-page=chat]")
    body, reply = send_chat(page, "Are you the small model?")
    assert reply.get_attribute("data-finish") in ("stop", "length")
    assert reply.locator(".text").inner_text().strip()


# ---- force_pass = true, and no model ----

def test_with_force_pass_and_no_model(browser, tmp_path):
    """Admin actions ask for nothing with force_pass; with no model loaded the chat shows the server's 503."""
    config = config_from_dict({"model": {"path": str(tmp_path)}, "listen": {"force_pass": True},
                               "web": {"path": str(tmp_path / "none.zip")}})
    server = start_server(make_app(None, config, tmp_path))
    page = open_page(browser, server.url + "/#settings")
    try:
        page.wait_for_selector("#status:has-text('no model loaded')")
        page.click("button[name=unload]")
        page.wait_for_selector("#settings-message.ok:has-text('unloaded')")
        assert not page.is_visible("dialog#login")
        page.click("#nav a[data-page=chat]")
        page.fill("textarea[name=message]", "Anyone there?")
        page.click("button[name=send]")
        page.wait_for_selector("#messages .msg.assistant:last-child[data-finish=error]")
        assert "no model is loaded" in page.inner_text("#messages .msg.assistant:last-child .meta")
        assert page.errors == []
    finally:
        page.close()
        server.close()


# ---- the shipped configuration: what `make serve` shows ----

@pytest.fixture(scope="module")
def shipped():
    """assets/configs/Config.toml as shipped (the project's trained model, force_pass = true, the bundled UI), on
    the reference engine so that the run does not depend on a Taichi arch."""
    config = resolve_config_paths(load_config(SHIPPED_CONFIG), REPO)
    config = dataclasses.replace(config, adapter=dataclasses.replace(config.adapter, engine="ref"))
    server = start_server(make_app(start_runtime(config), config, REPO))
    yield server
    server.close()


def english(text: str) -> bool:
    """Text that reads as the Python docs' prose: words, nearly all ASCII."""
    return " " in text.strip() and sum(c.isascii() for c in text) >= 0.8 * len(text)


def test_the_shipped_model_in_the_ui(browser, shipped):
    page = open_page(browser, shipped.url + "/")
    try:
        assert page.is_visible("#status:has-text('rwkv7-pydoc')")
        set_number(page, ".chat-options input[name=max_tokens]", 48)
        set_number(page, ".chat-options input[name=seed]", 3)
        body, reply = send_chat(page, "How do I read a file line by line in Python?")
        assert english(reply.locator(".text").inner_text())
        shot(page, "shipped-chat")
        page.click("#nav a[data-page=continue]")
        page.fill("textarea[name=text]", "A generator function in Python")
        set_number(page, ".side input[name=max_tokens]", 48)
        set_number(page, ".side input[name=seed]", 5)
        page.click("button[name=continue]")
        page.wait_for_selector("#continuation-status:has-text('chunks')")
        assert english(page.input_value("textarea[name=text]"))
        shot(page, "shipped-continuation")
        page.click("#nav a[data-page=paper]")
        page.fill("input[name=title]", "Iterators and generators in Python")
        set_number(page, ".side input[name=max_tokens]", 40)
        set_number(page, ".side input[name=seed]", 7)
        page.click("button[name=outline]")
        page.wait_for_selector("#paper-status:has-text('outline:')")
        page.fill("textarea[name=outline]", "1. Iterators\n2. Generator functions\n3. Generator expressions")
        page.click("button[name=write]")
        page.wait_for_selector("#paper-status:has-text('in parallel')")
        texts = page.locator(".paper-section .text").all_inner_texts()
        assert len(texts) == 3 and all(english(text) for text in texts)
        shot(page, "shipped-paper")
        assert page.errors == []
    finally:
        page.close()
