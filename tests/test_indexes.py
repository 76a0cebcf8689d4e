"""Exact inner-product search: faiss vs torch, the GPU fallback and the GPU wiring."""

import logging

import numpy as np
import pytest

from SeDR import indexes


def test_faiss_and_torch_search_agree_with_k_larger_than_corpus(random_corpus):
    vectors, _, queries = random_corpus
    k = len(vectors) + 3
    fs, fr = indexes.search(indexes.FaissFlatIndex(vectors, show_progress=False), queries, k, 8, False)
    ts, tr = indexes.search(indexes.TorchFlatIndex(vectors), queries, k, 8, False)
    assert fr.shape == tr.shape == (20, k)
    assert (fr[:, -3:] == -1).all() and (tr[:, -3:] == -1).all()
    np.testing.assert_array_equal(fr[:, :-3], tr[:, :-3])
    np.testing.assert_allclose(fs[:, :-3], ts[:, :-3], rtol=1e-5, atol=1e-5)


def test_faiss_gpus_fall_back_to_cpu_with_one_warning(random_corpus, caplog, monkeypatch):
    vectors, _, queries = random_corpus
    monkeypatch.setattr(indexes, "faiss_gpu_available", lambda: False)  # as on a CPU machine
    with caplog.at_level(logging.WARNING, logger="SeDR.indexes"):
        gpu = indexes.FaissFlatIndex(vectors, gpu_ids=[0], show_progress=False)
        gs, gr = indexes.search(gpu, queries, 64, show_progress=False)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "faiss-gpu" in warnings[0].getMessage()
    assert gpu.gpu_ids == []
    cs, cr = indexes.search(indexes.FaissFlatIndex(vectors, show_progress=False), queries, 64,
                              show_progress=False)
    np.testing.assert_array_equal(gr, cr)
    np.testing.assert_array_equal(gs, cs)


def test_resolve_faiss_gpus_without_request_is_silent(caplog):
    with caplog.at_level(logging.WARNING):
        assert indexes.resolve_faiss_gpus(None) == [] and indexes.resolve_faiss_gpus([]) == []
    assert not caplog.records


class FakeGpuFaiss:
    """Real faiss for the CPU index; a recording stand-in for the GPU layer faiss-cpu lacks."""

    def __init__(self, n_gpus):
        import types

        import faiss

        self.real, self.n_gpus, self.calls, self.temp_memory = faiss, n_gpus, [], []
        fake = self

        class Res:
            def setTempMemory(self, n):
                fake.temp_memory.append(n)

        self.StandardGpuResources = Res
        self.GpuClonerOptions = lambda: types.SimpleNamespace(useFloat16=None)
        self.GpuMultipleClonerOptions = lambda: types.SimpleNamespace(useFloat16=None, shard=None)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_num_gpus(self):
        return self.n_gpus

    def index_cpu_to_gpu(self, res, gpu, index, co):
        self.calls.append(("single", gpu, co.useFloat16))
        return self.real.clone_index(index)

    def index_cpu_to_gpu_multiple_py(self, resources, index, co, gpus):
        assert len(resources) == len(gpus)
        self.calls.append(("sharded", list(gpus), co.useFloat16, co.shard))
        return self.real.clone_index(index)


def test_gpu_wiring_single_and_sharded(random_corpus, monkeypatch):
    vectors, _, queries = random_corpus
    fake = FakeGpuFaiss(n_gpus=2)
    monkeypatch.setattr(indexes, "_faiss", lambda: fake)
    cpu = indexes.search(indexes.build_index(vectors, None, show_progress=False), queries, 32, show_progress=False)
    one = indexes.build_index(vectors, [1], fp16=True, show_progress=False)
    both = indexes.build_index(vectors, [0, 1], show_progress=False)
    assert fake.calls == [("single", 1, True), ("sharded", [0, 1], False, True)]
    assert fake.temp_memory == [512 * 1024 * 1024, 200 * 1024 * 1024, 200 * 1024 * 1024]  # SPEC §7.3
    for index in (one, both):
        assert index.ntotal == len(vectors)
        np.testing.assert_array_equal(indexes.search(index, queries, 32, show_progress=False)[1], cpu[1])
    with pytest.raises(ValueError, match="GPUs 0..1"):
        indexes.build_index(vectors, [2], show_progress=False)
