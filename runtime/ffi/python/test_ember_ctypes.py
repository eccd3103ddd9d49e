"""Tests of the ctypes example: python3 test_ember_ctypes.py LIBEMBER MODEL."""
import sys

from ember_ctypes import Ember, EmberError, INVALID_ARGUMENT, IO


def main(lib, model):
    try:
        Ember(lib, "/nonexistent/model.gguf")
        raise AssertionError("a missing model must fail")
    except EmberError as e:
        assert e.status == IO, e
    try:
        Ember(lib, model, n_ctx=0)
        raise AssertionError("n_ctx 0 must fail")
    except EmberError as e:
        assert e.status == INVALID_ARGUMENT and "n_ctx" in str(e), e
    with Ember(lib, model, n_ctx=512) as e:
        assert e.version()
        assert e.tokenize("Hello world") == [19556, 905]
        prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        text = e.generate(prompt, max_tokens=16)
        assert text, "some text"
        e.reset()
        assert e.generate(prompt, max_tokens=16) == text, "greedy is repeatable"
        e.reset()
        pieces = []
        e.generate(prompt, max_tokens=16, on_piece=lambda p: pieces.append(p) or len(pieces) == 2)
        assert len(pieces) == 2 and "".join(pieces) == text[: len("".join(pieces))]
        e.reset()
        reply = e.chat("What is the capital of France?", max_tokens=16)
        assert reply and "<|im_end|>" not in reply, reply
        assert e.chat("And of Italy?", max_tokens=16)
    print("ctypes example: 9 checks passed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
