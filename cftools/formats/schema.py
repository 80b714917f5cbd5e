"""The on-disk schema of cftools: every artifact kind, its datasets and its attributes.

Every artifact is one HDF5 file whose root attributes say what it is (``ROOT_ATTRS``);
``KINDS`` declares, for each kind, every dataset (dtype, symbolic shape, whether it is
required, what it encodes, the format version that introduced it) and every attribute a
cftools command writes (required ones are checked on open). Symbolic dimensions (N, d,
k, L, M) must agree across the datasets of one file.

man/cftools.7 (FILE FORMAT) is the written form of this module; a test holds the two in
step. The model kind has subtypes told apart by its ``config`` attribute
(``model_subtype``): a Clusformer (cf-train) or a backbone (cf-embed train).
"""

from __future__ import annotations

from dataclasses import dataclass

FORMAT_VERSION = 1
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
ROW_CHUNK_BYTES = 4 << 20  # ~4 MiB per chunk: big enough to stream fast, small enough to seek


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a kind: its dtype and its symbolic shape (dims shared across the file)."""

    name: str
    dtype: str  # numpy dtype name, or "str" for UTF-8 strings
    dims: tuple[str, ...]
    meaning: str
    required: bool = True
    finite: bool = False  # NaN/Inf refused (checked by check_finite, streamed)
    since: int = 1  # the format version that introduced it


# What an attribute holds, checked when a file is opened (artifacts.py reads them all):
# "str" a string; "int" an integer; "float" a finite number; "bool" true/false; "json" a
# JSON text (the value JSON_TYPES says, where it says); "sim" a number or "none".
ATTR_TYPES = ("str", "int", "float", "bool", "json", "sim")


@dataclass(frozen=True)
class AttrSpec:
    """One root attribute of a kind. JSON attributes hold a JSON text."""

    name: str
    meaning: str
    required: bool = False  # checked when the file is opened
    json: bool = False
    since: int = 1
    type: str = "str"  # one of ATTR_TYPES ("json" when json)

    @property
    def holds(self) -> str:
        return "json" if self.json else self.type

    @property
    def json_list(self) -> bool:
        """A JSON attribute holding a list (the others hold an object)."""
        return self.name in JSON_LISTS


JSON_LISTS = ("cftools_provenance", "batches")


@dataclass(frozen=True)
class KindSpec:
    name: str
    meaning: str
    datasets: tuple[DatasetSpec, ...]
    attrs: tuple[AttrSpec, ...] = ()
    groups: tuple[str, ...] = ()  # required groups (model weights)

    @property
    def required_attrs(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attrs if a.required)

    def dataset(self, name: str) -> DatasetSpec:
        return next(d for d in self.datasets if d.name == name)


ROOT_ATTRS = (
    AttrSpec("cftools_kind", "features, knn, sequences, model, links or clusters", True),
    AttrSpec("cftools_format", "integer format version of the kind", True, type="int"),
    AttrSpec("cftools_id", "32 random hex digits, new for every file written", True),
    AttrSpec("cftools_provenance", "list of steps, oldest first: {command, version, time, "
             "inputs: {role: id}, output: id}", True, json=True),
)

_FEATURES = KindSpec(
    "features", "points as L2-normalised rows, with what is known about them",
    (
        DatasetSpec("features", "float32", ("N", "d"), "L2-normalised rows", finite=True),
        DatasetSpec("labels", "int64", ("N",), "identity, -1 = unknown", required=False),
        DatasetSpec("names", "str", ("N",), "image path or id", required=False),
        DatasetSpec("source", "int8", ("N",), "(cf-merge labels) 0 labelled, 1 pseudo-labelled",
                    required=False),
        DatasetSpec("source_rows", "int64", ("N",), "(cf-merge labels) row in its input",
                    required=False),
    ),
    (
        AttrSpec("demo", "cf-data demo's parameters", json=True),
        AttrSpec("split_rows_of", "id of the file a split was taken from"),
        AttrSpec("label_names", "{label: folder name} of images (cf-embed extract)", json=True),
        AttrSpec("flip_test", "cf-embed extract: features averaged with the mirrored image", type="bool"),
        AttrSpec("skipped_images", "cf-embed extract: unreadable images left out", type="int"),
        AttrSpec("batches", "cf-merge add: [{batch, n}] of the rows, oldest first", json=True),
        # cf-merge labels: what the retraining set holds and what was left out
        AttrSpec("n_labelled", "cf-merge labels: rows of the labelled set", type="int"),
        AttrSpec("n_pseudo", "cf-merge labels: pseudo-labelled rows", type="int"),
        AttrSpec("n_labelled_ids", "cf-merge labels: identities of the labelled set", type="int"),
        AttrSpec("n_pseudo_ids", "cf-merge labels: pseudo-identities", type="int"),
        AttrSpec("pseudo_label_offset", "cf-merge labels: the first pseudo-identity", type="int"),
        AttrSpec("min_size", "cf-merge labels: smallest cluster kept", type="int"),
        AttrSpec("max_size", "cf-merge labels: largest cluster kept (0: no limit)", type="int"),
        AttrSpec("dropped_unassigned", "cf-merge labels: unassigned points left out", type="int"),
        AttrSpec("dropped_small", "cf-merge labels: points of smaller clusters left out", type="int"),
        AttrSpec("dropped_large", "cf-merge labels: points of larger clusters left out", type="int"),
        AttrSpec("oversized", "cf-merge labels: clusters over the largest size dropped or trimmed"),
        AttrSpec("trimmed", "cf-merge labels --oversized trim: points trimmed from larger "
                 "clusters", type="int"),
        AttrSpec("outside_cores", "cf-merge labels --cores: points left out of their "
                 "cluster's core", type="int"),
        AttrSpec("cores_id", "cf-merge labels --cores: id of the stricter clustering (empty: "
                 "none)"),
        AttrSpec("dropped_unlabelled_rows_of_labelled_set",
                 "cf-merge labels: labelled-set rows of unknown label left out", type="int"),
        AttrSpec("clusters_id", "cf-merge labels: id of the clusters file"),
        AttrSpec("corrections", "cf-merge labels --corrections: the file honoured and what it "
                 "changed", json=True),
    ),
)

_KNN = KindSpec(
    "knn", "the k nearest neighbours of every query by cosine",
    (
        DatasetSpec("indices", "int64", ("N", "k"), "neighbour row ids in the base features; "
                    "-1 = not found"),
        DatasetSpec("similarities", "float32", ("N", "k"), "cosine similarity, falling along "
                    "each row", finite=True),
    ),
    (
        AttrSpec("query_id", "id of the query features", True),
        AttrSpec("base_id", "id of the base features (equal to query_id for a self search)",
                 True),
        AttrSpec("method", "exact, ivf or hnsw: the method that ran", True),
        AttrSpec("self_first", "true when column 0 is the point itself", True, type="bool"),
        AttrSpec("k", "neighbours per row", type="int"),
        AttrSpec("params", "the method's parameters as used", json=True),
        AttrSpec("base_n", "rows of the base", type="int"),
        AttrSpec("device", "CPU or GPU"),
        AttrSpec("method_requested", "auto, when cf-knn chose the method"),
        AttrSpec("auto", "auto's choice: exact_below, recall_target, chosen, trials", json=True),
        AttrSpec("recall_at_k", "approximate methods: recall@k against exact search", type="float"),
        AttrSpec("recall_sample", "approximate methods: queries the recall was measured on", type="int"),
    ),
)

_SEQUENCES = KindSpec(
    "sequences", "every point's neighbours as a sequence, centre first (the visual grammar)",
    (
        DatasetSpec("order", "int64", ("N", "L"), "row ids; column 0 is the centre"),
        DatasetSpec("mask", "bool", ("N", "L"), "true where the position is valid"),
        DatasetSpec("targets", "int8", ("N", "L"), "1 same identity as the centre, 0 not, "
                    "-1 unknown", required=False),
    ),
    (
        AttrSpec("knn_id", "id of the knn file", True),
        AttrSpec("features_id", "id of the features", True),
        AttrSpec("L", "sequence length", type="int"),
        AttrSpec("min_sim", '"none" or the similarity below which positions are masked', type="sim"),
    ),
)

_MODEL = KindSpec(
    "model", "trained weights: a Clusformer (cf-train) or a backbone (cf-embed train)",
    (),
    (
        AttrSpec("config", "the architecture; a backbone's has arch " + repr("resnet-backbone"),
                 True, json=True),
        AttrSpec("thresholds", "Clusformer: thresholds calibrated on labelled data (keys: "
                 "formats.thresholds)", json=True),
        AttrSpec("training", "Clusformer: training summary (epochs, validation, guard, "
                 "gate, cosine_thresholds, length_selection)", json=True),
    ),
    groups=("weights",),
)

_LINKS = KindSpec(
    "links", "per point, the probability that each neighbour shares its identity",
    (
        DatasetSpec("indices", "int64", ("N", "k"), "neighbour row ids, column 0 the point "
                    "itself"),
        DatasetSpec("probabilities", "float32", ("N", "k"), "P(neighbour shares the point's "
                    "identity), or cosine", finite=True),
    ),
    (
        AttrSpec("features_id", "id of the features linked", True),
        AttrSpec("method", "model or cosine", True),
        AttrSpec("sequences_id", "id of the sequences (\"cf-merge add\" after an add)"),
        AttrSpec("model_id", 'id of the model, "none" for cosine links without one'),
        AttrSpec("thresholds", "the calibrated thresholds cf-merge uses by default", json=True),
        AttrSpec("guard_winner", 'model, cosine, or "none": the verdict of cf-train\'s guard'),
        AttrSpec("min_sim", "cf-seq --min-sim of the sequences, which cf-merge add follows", type="sim"),
        AttrSpec("model_rows", "rows the model read (the others kept calibrated cosine, "
                 "outside the gate); 0 for cosine links", type="int"),
        AttrSpec("gate", "the gate cf-link read model links with (decoder, mode, threshold, "
                 "reach, flip_distance); {} for none", json=True),
    ),
)

_CLUSTERS = KindSpec(
    "clusters", "a cluster id per point: the pseudo-labels",
    (
        DatasetSpec("labels", "int64", ("N",), "cluster id, -1 = unassigned"),
        DatasetSpec("batch", "int32", ("N",), "(cf-merge add) 0 = the original set, b = added "
                    "by the b-th add", required=False),
        DatasetSpec("merges", "int64", ("M", "4"), "(cf-merge add) batch, kept id, merged id, "
                    "members reached", required=False),
        DatasetSpec("id_changes", "int64", ("I", "5"), "(--previous, add) step, kind (1 split, "
                    "2 merged), old id, new id, points", required=False),
        DatasetSpec("answers", "str", ("A",), "(--corrections) every answer honoured, one JSON "
                    "object each", required=False),
    ),
    (
        AttrSpec("method", "the decoder"),
        AttrSpec("link_mode", "reciprocal or directed"),
        AttrSpec("threshold", "the decoder's threshold", type="float"),
        AttrSpec("threshold_source", "where the threshold came from"),
        AttrSpec("links_id", "id of the links decoded"),
        AttrSpec("link_method", "model or cosine"),
        AttrSpec("features_id", "id of the features"),
        AttrSpec("singletons", "the singleton policy"),
        AttrSpec("singleton_counts", "singletons found, kept, attached, unassigned", json=True),
        AttrSpec("summary", "clusters, singletons, unassigned, largest", json=True),
        AttrSpec("seed", "the decoder's seed", type="int"),
        AttrSpec("intimacy_ratio", "intimacy: the ratio used", type="float"),
        AttrSpec("peaks_tolerance", "peaks: the tolerance used", type="float"),
        AttrSpec("max_size", "components: the size limit", type="int"),
        AttrSpec("size_step", "components: the threshold step", type="float"),
        AttrSpec("attach_threshold", "attach: the least link weight", type="float"),
        AttrSpec("batches", "cf-merge add: one entry per batch (source, time, counts, timings)",
                 json=True),
        AttrSpec("corrections", "--corrections: the file honoured and what it changed", json=True),
        AttrSpec("cluster_names", "{cluster id: name} from the answers", json=True),
        AttrSpec("next_id", "the least cluster id never used (ids are never given again)",
                 type="int"),
        AttrSpec("previous_id", "--previous: id of the clustering whose ids were kept"),
    ),
)

KINDS: dict[str, KindSpec] = {k.name: k for k in (_FEATURES, _KNN, _SEQUENCES, _MODEL, _LINKS,
                                                  _CLUSTERS)}

# Model subtypes, told apart by the config attribute.
BACKBONE_ARCH = "resnet-backbone"
MODEL_SUBTYPES = ("clusformer", "backbone")


def model_subtype(config: object) -> str | None:
    """'backbone' for a config naming the backbone's arch, 'clusformer' for one with a
    sequence length, else None (not a model cftools makes)."""
    if not isinstance(config, dict):
        return None
    if config.get("arch") == BACKBONE_ARCH:
        return "backbone"
    if "seq_len" in config:
        return "clusformer"
    return None
