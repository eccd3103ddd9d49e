"""ember from Python through ctypes: a thin wrapper over libember (see include/ember.h).

    from ember_ctypes import Ember
    with Ember("libember.so", "models/SmolLM2-135M-Instruct.Q4_1.gguf") as e:
        print(e.tokenize("Hello world"))
        print(e.chat("What is the capital of France?", max_tokens=32))
"""
import ctypes as C

OK, INVALID_ARGUMENT, IO, FORMAT, UNSUPPORTED, CAPACITY, CANCELLED, INTERNAL = range(8)


class EmberError(Exception):
    def __init__(self, status, message):
        super().__init__(f"ember error {status}: {message}")
        self.status = status


class Params(C.Structure):
    _fields_ = [
        ("n_ctx", C.c_uint32), ("n_threads", C.c_uint32), ("temperature", C.c_float),
        ("top_k", C.c_uint32), ("top_p", C.c_float), ("min_p", C.c_float),
        ("repeat_penalty", C.c_float), ("seed", C.c_uint64), ("repeat_last_n", C.c_uint32),
        ("n_sinks", C.c_uint32), ("kv_type", C.c_uint32),
    ]


PIECE_FN = C.CFUNCTYPE(C.c_int, C.c_char_p, C.c_size_t, C.c_void_p)


def _load(path):
    lib = C.CDLL(path)
    lib.ember_version.restype = C.c_char_p
    lib.ember_last_error.restype = C.c_char_p
    lib.ember_params_default.restype = Params
    lib.ember_model_open.argtypes = [C.c_char_p, C.POINTER(C.c_void_p)]
    lib.ember_model_free.argtypes = [C.c_void_p]
    lib.ember_session_new.argtypes = [C.c_void_p, C.POINTER(Params), C.POINTER(C.c_void_p)]
    lib.ember_session_free.argtypes = [C.c_void_p]
    lib.ember_session_reset.argtypes = [C.c_void_p]
    lib.ember_tokenize.argtypes = [C.c_void_p, C.c_char_p, C.POINTER(C.c_int32), C.c_size_t,
                                   C.POINTER(C.c_size_t)]
    for f in (lib.ember_generate, lib.ember_chat):
        f.argtypes = [C.c_void_p, C.c_char_p, C.c_uint32, PIECE_FN, C.c_void_p]
    return lib


class Ember:
    """One model and one session (greedy by default; pass Params fields as keywords)."""

    def __init__(self, lib_path, model_path, **params):
        self.lib = _load(lib_path)
        self.model = C.c_void_p()
        self.session = C.c_void_p()
        self._check(self.lib.ember_model_open(model_path.encode(), C.byref(self.model)))
        p = self.lib.ember_params_default()
        for k, v in params.items():
            setattr(p, k, v)
        self._check(self.lib.ember_session_new(self.model, C.byref(p), C.byref(self.session)))

    def _check(self, status):
        if status != OK:
            raise EmberError(status, self.lib.ember_last_error().decode())

    def version(self):
        return self.lib.ember_version().decode()

    def tokenize(self, text):
        n = C.c_size_t()
        st = self.lib.ember_tokenize(self.model, text.encode(), None, 0, C.byref(n))
        if st not in (OK, CAPACITY):
            self._check(st)
        ids = (C.c_int32 * max(n.value, 1))()
        self._check(self.lib.ember_tokenize(self.model, text.encode(), ids, n.value, C.byref(n)))
        return list(ids[: n.value])

    def _stream(self, fn, text, max_tokens, on_piece):
        out = bytearray()

        @PIECE_FN
        def cb(piece, length, _user):
            chunk = C.string_at(piece, length)
            out.extend(chunk)
            return 1 if on_piece and on_piece(chunk.decode()) else 0

        self._check(fn(self.session, text.encode(), max_tokens, cb, None))
        return out.decode()

    def generate(self, prompt, max_tokens=64, on_piece=None):
        """Appends `prompt` verbatim and returns the generated text (`on_piece` may stop it by
        returning True)."""
        return self._stream(self.lib.ember_generate, prompt, max_tokens, on_piece)

    def chat(self, message, max_tokens=256, on_piece=None):
        """One turn through the model's chat template; returns the reply."""
        return self._stream(self.lib.ember_chat, message, max_tokens, on_piece)

    def reset(self):
        self.lib.ember_session_reset(self.session)

    def close(self):
        if self.session:
            self.lib.ember_session_free(self.session)
            self.session = C.c_void_p()
        if self.model:
            self.lib.ember_model_free(self.model)
            self.model = C.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
