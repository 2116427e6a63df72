"""The corpus builder (ai00ref/train/corpus.py): HTML main text to paragraphs, documents, split. No torch needed."""
from __future__ import annotations

import numpy as np

from ai00ref.train.corpus import VALIDATION_EVERY, join_documents, page_paragraphs, split

PAGE = """<html><body><div class="sphinxsidebar">Navigation</div>
<div class="body" role="main">
<h1>4. More Control Flow<a class="headerlink" href="#x" title="Permalink">¶</a></h1>
<p>Besides the <code>while</code>
   statement, Python   uses <em>the usual</em> flow control.</p>
<div class="highlight"><pre><span class="gp">&gt;&gt;&gt; </span>for i in range(2):
...     print(i)
</pre></div>
<ul><li><p>one</p></li><li>two</li></ul>
</div>
<div class="footer">Copyright</div></body></html>"""


def test_page_paragraphs_keeps_the_main_text_only():
    assert page_paragraphs(PAGE) == [
        "4. More Control Flow",
        "Besides the while statement, Python uses the usual flow control.",
        ">>> for i in range(2):\n...     print(i)",
        "one",
        "two",
    ]


def test_documents_end_with_token_zero_and_every_50th_is_held_out():
    docs = join_documents([[[5, 6], [7]], [], [[8]]] + [[[9]]] * 60)
    assert docs[0] == [5, 6, 7, 0] and docs[1] == [8, 0] and len(docs) == 62  # the empty page is dropped
    train, val = split(docs)
    assert val.dtype == np.uint16 and val.tolist() == docs[VALIDATION_EVERY - 1]
    assert train.size + val.size == sum(len(d) for d in docs)
