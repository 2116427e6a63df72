"""The training corpus: the English text of the Python 3.11 documentation, from Debian's `python3.11-doc` package.

    python -m ai00ref.train.corpus --deb python3.11-doc_3.11.2-6+deb12u9_all.deb --out .train/corpus
    python -m ai00ref.train.corpus --download --out .train/corpus        # runs `apt-get download` first

Steps (assets/models/README.md records the package, version and license):
1. The package's HTML pages (`usr/share/doc/python3.11/html/**/*.html`, the index pages left out) become plain
   text: the main `<div role="main">` only, one paragraph per block element, code blocks kept verbatim.
2. The text is tokenized with the World tokenizer; one document per page, each followed by token 0 (end of text).
3. Every 50th document is the validation split. Writes `train.npy`, `val.npy` (uint16 token ids) and `meta.json`.
(The trainer picks the trained embedding rows from `train.npy`: ai00ref.train.train.choose_vocab.)

Pure standard library + NumPy: no torch needed.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

PACKAGE = "python3.11-doc"
HTML_ROOT = "usr/share/doc/python3.11/html"
SKIPPED_PAGES = ("genindex", "py-modindex", "search.html", "_static", "_sources", "_downloads", "_images",
                 "license.html", "copyright.html", "download.html", "bugs.html", "about.html", "contents.html")
BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "pre", "tr", "blockquote", "div", "table",
          "ul", "ol", "dl", "section"}
VALIDATION_EVERY = 50  # every 50th page (sorted by path) is held out


# ---- HTML to text ----

class MainText(HTMLParser):
    """Collects the text inside `<div role="main">` as paragraphs; drops the "¶" permalinks."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0          # div depth inside the main div (0: outside)
        self.skip = 0           # inside a headerlink anchor
        self.pre = 0            # inside <pre>
        self.paragraphs: list[str] = []
        self.current: list[str] = []

    def flush(self) -> None:
        text = "".join(self.current)
        text = text.strip("\n") if self.pre else re.sub(r"\s+", " ", text).strip()
        if text:
            self.paragraphs.append(text)
        self.current = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth == 0:
            if tag == "div" and attrs.get("role") == "main":
                self.depth = 1
            return
        if tag == "div":
            self.depth += 1
        if tag == "a" and "headerlink" in (attrs.get("class") or ""):
            self.skip += 1
        if tag in BLOCKS:
            self.flush()
        if tag == "pre":
            self.pre += 1
        if tag == "br":
            self.current.append("\n")

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag == "a" and self.skip:
            self.skip -= 1
        if tag in BLOCKS:
            self.flush()
        if tag == "pre":
            self.pre -= 1
        if tag == "div":
            self.depth -= 1

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.current.append(data)


def page_paragraphs(html: str) -> list[str]:
    parser = MainText()
    parser.feed(html)
    parser.close()
    parser.flush()
    return parser.paragraphs


def doc_pages(root: Path) -> list[Path]:
    pages = sorted(p for p in root.rglob("*.html") if not any(s in str(p.relative_to(root)) for s in SKIPPED_PAGES))
    return pages


# ---- tokens ----

def tokenize_pages(pages: list[Path], tokenizer) -> list[list[list[int]]]:
    """Per page, per paragraph: the token ids of `paragraph + "\\n\\n"`."""
    return [[tokenizer.encode(p + "\n\n") for p in page_paragraphs(page.read_text(encoding="utf-8"))]
            for page in pages]


def join_documents(docs) -> list[list[int]]:
    """Each non-empty page as one token list: its paragraphs, then token 0 (end of text)."""
    return [[t for para in doc for t in para] + [0] for doc in docs if any(doc)]


def split(docs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    train = [t for i, d in enumerate(docs) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1 for t in d]
    val = [t for i, d in enumerate(docs) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1 for t in d]
    return np.array(train, np.uint16), np.array(val, np.uint16)


def unpack_deb(deb: Path, into: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into / HTML_ROOT


def download_deb(into: Path) -> Path:
    subprocess.run(["apt-get", "download", PACKAGE], cwd=into, check=True)
    return next(into.glob(f"{PACKAGE}_*.deb"))


def build(deb: Path, out: Path) -> dict:
    from ai00ref.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        pages = doc_pages(unpack_deb(deb, Path(tmp)))
        docs = tokenize_pages(pages, load_tokenizer())
    kept = join_documents(docs)
    train, val = split(kept)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "train.npy", train)
    np.save(out / "val.npy", val)
    meta = {"package": deb.name, "pages": len(pages), "documents": len(kept),
            "distinct_tokens": len(set(train.tolist()) | set(val.tolist())),
            "train_tokens": int(train.size), "val_tokens": int(val.size)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deb", type=Path, help=f"the {PACKAGE} .deb (else --download)")
    ap.add_argument("--download", action="store_true", help=f"apt-get download {PACKAGE} into --out first")
    ap.add_argument("--out", type=Path, default=Path(".train/corpus"))
    args = ap.parse_args(argv)
    if not args.deb and not args.download:
        ap.error("give --deb PATH or --download")
    args.out.mkdir(parents=True, exist_ok=True)
    deb = args.deb or download_deb(args.out)
    print(json.dumps(build(deb, args.out), indent=1))


if __name__ == "__main__":
    main()
