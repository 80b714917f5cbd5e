# The semi-supervised round, one file per step under work/$(DATA)/round$(ROUND)/, so Make
# redoes only what changed. Included by the Makefile; see README "The round".
#
#   make round                     the built-in demo: synthetic face-like images
#   make round ROUND=2             round 2: backbone retrained on D_L + round 1's pseudo-labels
#   make round DATA=name           data/name/ holds images or features (layout in README)
#   make round ROUND=2 baseline upper-bound report
#                                  round 2 against a step-matched D_L-only backbone and one
#                                  trained on D_U's true labels, scored on the test part
#
# Knobs (override on the command line): K, L, TRAIN_L, DECODER, TRAIN_EPOCHS, SEED,
# GUARD_DISTRACTORS, ...
# K and L are the most neighbours the round looks at on D_L; cf-train chooses there how
# many of them its model and cosine links read (TRAIN_L=auto) and whether the model's links
# beat cosine ones (cf-link's --method auto then writes the winner's links). D_U is searched
# only as far as those lengths (cf-knn/cf-seq --for-model).
# Every step shows its progress and a summary line; QUIET=-q silences them.

CF      := $(BIN)
DATADIR := data/$(DATA)
R       := $(WORK)/round$(ROUND)
PREV    := $(WORK)/round$(shell expr $(ROUND) - 1)

K            ?= 81
L            ?= 81
TRAIN_L      ?= auto
# SEED seeds the backbone (cf-embed train) and the link model (cf-train)
SEED         ?= 0
# cf-merge's decoder; cf-train calibrates its threshold alone (with Infomap's, the
# guard's) and cf-link gates the model for it
DECODER      ?= infomap
PRESET       ?= small
TRAIN_EPOCHS ?= 8
TRAIN_LR     ?= 1e-3
EMBED_ARGS   ?= --depth 18 --width 16 --image-size 64 --dim 128 --epochs 8 --scale 32 --margin 0.3 --workers 1
QUIET        ?=
DEMO_ARGS    ?=
# round r > 1 fine-tunes round r-1's backbone (yes) or trains one from scratch (no); the
# baseline and the upper bound then fine-tune round 1's, so all three share their start
FINETUNE     ?= yes
# pseudo-identities larger than this are left out of the retraining (auto: than D_L's
# largest identity: bigger clusters are mostly identities merged); none: no limit
PSEUDO_MAX_SIZE ?= auto
# what becomes of those larger clusters: dropped (drop) or trimmed to their PSEUDO_MAX_SIZE
# members nearest their mean (trim)
PSEUDO_OVERSIZED ?= drop
# the next round's pseudo-labels (images): jury, each of the round's clusters cut to its
# core, its largest piece at the stricter threshold cf-train --pseudo-threshold chooses on
# the guard's crowded jury (needs GUARD_DISTRACTORS=yes or LINK_SELF=yes, else as
# calibrated; cf-merge labels --cores; bench/studies/pseudo-labels); calibrated, the
# round's clusters whole
PSEUDO_THRESHOLD ?= jury
# yes: cf-train's guard judges the model among D_U's points too (cf-train --distractors),
# in a graph as crowded as D_U, for an exact kNN of the held-out identities' neighbourhood
# in D_L + D_U and the model's links of it; no: among D_L's points only, cheaper, but the
# sparser graph favours cosine links and the verdict flips between draws of one model
GUARD_DISTRACTORS ?= yes
# images: the link model learns twice, from D_L (a draft of the round's clusters), then
# from all of the round's points, D_L with its labels and D_U with the draft's pseudo-
# labels where they gave one, unknown elsewhere (link_labelled.h5 by cf-data carry-labels;
# D_U is then the guard's crowd already, so no --distractors); the second pass makes the
# round's clusters and labels (yes), or once from D_L (no)
LINK_SELF ?= yes

# ------------------------------------------------------------------ where the data comes from
# images: $(IMAGES)/labelled/<identity>/*, $(IMAGES)/unlabelled/[<identity>/]*
# features: labelled.{h5,npy,bin} (+ labels) and unlabelled.{h5,npy,bin} in data/<name>/,
#           or learn-to-cluster's part0_train.bin/.meta and part1_test.bin/.meta
ifeq ($(DATA),demo)
  IMAGES := $(WORK)/images
else
  IMAGES := $(DATADIR)
endif
FEATURE_SOURCES := $(firstword $(wildcard $(DATADIR)/labelled.h5 $(DATADIR)/labelled.npy \
                     $(DATADIR)/labelled.bin $(DATADIR)/part0_train.bin))
ifneq ($(FEATURE_SOURCES),)
  MODE := features
  SRC_L := $(FEATURE_SOURCES)
  SRC_U := $(firstword $(wildcard $(DATADIR)/unlabelled.h5 $(DATADIR)/unlabelled.npy \
                     $(DATADIR)/unlabelled.bin $(DATADIR)/part1_test.bin))
  LABELS_L := $(firstword $(wildcard $(basename $(SRC_L)).meta $(DATADIR)/labelled_labels.npy))
  LABELS_U := $(firstword $(wildcard $(basename $(SRC_U)).meta $(DATADIR)/unlabelled_labels.npy))
  SRC_T := $(firstword $(wildcard $(DATADIR)/test.h5 $(DATADIR)/test.npy $(DATADIR)/test.bin))
  LABELS_T := $(firstword $(wildcard $(basename $(SRC_T)).meta $(DATADIR)/test_labels.npy))
  HAVE_TEST := $(if $(SRC_T),yes)
else
  MODE := images
  # the test part: identities in neither D_L nor D_U (the demo draws them in images/test)
  TEST_IMAGES := $(if $(filter demo,$(DATA)),$(IMAGES)/test,$(wildcard $(DATADIR)/test))
  HAVE_TEST := $(if $(TEST_IMAGES),yes)
endif

# the link side's second pass from the round's own pseudo-labels (LINK_SELF, images only)
SELF_TRAIN := $(and $(filter images,$(MODE)),$(filter yes,$(LINK_SELF)))

.PHONY: round

$(R):
	mkdir -p $@

$(WORK)/images/.done: | setup
	rm -rf $(WORK)/images && mkdir -p $(WORK)
	$(CF)/cf-embed demo $(WORK)/images $(DEMO_ARGS) $(QUIET)
	touch $@

# ------------------------------------------------------------------ features of D_L and D_U
ifeq ($(MODE),features)
$(R)/labelled.h5: $(SRC_L) | $(R)
	$(CF)/cf-data import $< $(if $(LABELS_L),--labels $(LABELS_L)) -o $@ $(QUIET)
$(R)/unlabelled.h5: $(SRC_U) | $(R)
	$(CF)/cf-data import $< $(if $(LABELS_U),--labels $(LABELS_U)) -o $@ $(QUIET)
else
IMAGES_DONE := $(if $(filter demo,$(DATA)),$(WORK)/images/.done,)

# round 1 trains the backbone on D_L's images; round r > 1 on D_L + round r-1's pseudo-labels
ifeq ($(ROUND),1)
$(R)/backbone.h5: $(IMAGES_DONE) | $(R)
	$(CF)/cf-embed train $(IMAGES)/labelled -o $@ $(EMBED_ARGS) --seed $(SEED) $(QUIET)
else
ifeq ($(FINETUNE),yes)
$(R)/backbone.h5: $(PREV)/retrain.h5 $(PREV)/backbone.h5 | $(R)
	$(CF)/cf-embed train $< --init $(PREV)/backbone.h5 -o $@ $(EMBED_ARGS) --seed $(SEED) $(QUIET)
else
$(R)/backbone.h5: $(PREV)/retrain.h5 | $(R)
	$(CF)/cf-embed train $< -o $@ $(EMBED_ARGS) --seed $(SEED) $(QUIET)
endif
endif

# round r > 1 from a fresh clone: the rounds before it first (each prints what it prints)
ifneq ($(ROUND),1)
$(PREV)/retrain.h5:
	$(MAKE) round ROUND=$(shell expr $(ROUND) - 1)
endif

$(R)/labelled.h5: $(R)/backbone.h5
	$(CF)/cf-embed extract $< $(IMAGES)/labelled -o $@ --workers 1 $(QUIET)
$(R)/unlabelled.h5: $(R)/backbone.h5
	$(CF)/cf-embed extract $< $(IMAGES)/unlabelled -o $@ --workers 1 $(QUIET)
endif

# ------------------------------------------------------------------ the test part
# Identities in neither D_L nor D_U. Their features only ever reach cf-eval identify: no
# training set, kNN, sequence, model or calibration is made from them.
ifeq ($(MODE),features)
$(R)/test.h5: $(SRC_T) | $(R)
	$(CF)/cf-data import $< $(if $(LABELS_T),--labels $(LABELS_T)) -o $@ $(QUIET)
else
# any backbone's folder (round<r>, baseline, upper-bound): its features of the test part
$(WORK)/%/test.h5: $(WORK)/%/backbone.h5
	$(CF)/cf-embed extract $< $(TEST_IMAGES) -o $@ --workers 1 $(QUIET)
endif

# the backbone's recognition of unseen identities: top-1 identification and TAR at FAR
.PRECIOUS: $(WORK)/%/test.h5 $(WORK)/%/recognition.json
$(WORK)/%/recognition.json: $(WORK)/%/test.h5
	$(CF)/cf-eval identify $< -o $@ -q

# ------------------------------------------------------------------ Clusformer
$(R)/knn_%.h5: $(R)/%.h5
	$(CF)/cf-knn $< -o $@ -k $(K) $(QUIET)

$(R)/seq_%.h5: $(R)/knn_%.h5 $(R)/%.h5
	$(CF)/cf-seq $< --features $(R)/$*.h5 -o $@ -L $(L) $(QUIET)

CROWD := $(if $(filter yes,$(GUARD_DISTRACTORS)),$(R)/unlabelled.h5)
# cf-train chooses the jury's stricter threshold for the pseudo-labels' cores (images
# only: features have no backbone to retrain), where the jury has D_U's points
JURY_CUT := $(and $(filter images,$(MODE)),$(filter jury,$(PSEUDO_THRESHOLD)))

# One pass of the link side, its files named $(1)*: the link model learnt from the round's
# features file $(2) (labelled.h5: D_L; link_labelled.h5: D_L + D_U, pseudo-labelled in
# part), judged among the distractors $(3); $(4) non-empty where the guard's jury has D_U's
# points (from $(3) or inside $(2)); D_U's links, clusters, their cores at the pseudo-label
# threshold (chosen on that jury) and the retraining labels.
define LINK_PASS
$(R)/$(1)model.h5: $(R)/seq_$(2).h5 $(R)/$(2).h5 $(3)
	$(CF)/cf-train $$< --features $(R)/$(2).h5 -o $$@ --preset $(PRESET) -L $(TRAIN_L) \
	  --epochs $(TRAIN_EPOCHS) --lr $(TRAIN_LR) --seed $(SEED) --decoders $(DECODER) \
	  $(if $(3),--distractors $(3)) $(if $(and $(JURY_CUT),$(4)),--pseudo-threshold) $(QUIET)

# the unlabelled side searches and reads only as far as the model's links look (the longer
# of the lengths cf-train chose for the model and for cosine links, never past L)
$(R)/$(1)knn_unlabelled.h5: $(R)/unlabelled.h5 $(R)/$(1)model.h5
	$(CF)/cf-knn $$< -o $$@ --for-model $(R)/$(1)model.h5 $(QUIET)

$(R)/$(1)seq_unlabelled.h5: $(R)/$(1)knn_unlabelled.h5 $(R)/unlabelled.h5 $(R)/$(1)model.h5
	$(CF)/cf-seq $$< --features $(R)/unlabelled.h5 -o $$@ --for-model $(R)/$(1)model.h5 $(QUIET)

$(R)/$(1)links.h5: $(R)/$(1)seq_unlabelled.h5 $(R)/unlabelled.h5 $(R)/$(1)model.h5
	$(CF)/cf-link $$< --features $(R)/unlabelled.h5 --model $(R)/$(1)model.h5 -o $$@ \
	  --method auto --gate $(DECODER) $(QUIET)

$(R)/$(1)clusters.h5: $(R)/$(1)links.h5
	$(CF)/cf-merge $$< -o $$@ --method $(DECODER) $(QUIET)

# D_U's links at the jury's stricter threshold: each cluster keeps its largest piece there
$(R)/$(1)pseudo_clusters.h5: $(R)/$(1)links.h5
	$(CF)/cf-merge $$< -o $$@ --method infomap --pseudo $(QUIET)

# D_L + pseudo-labelled D_U: the next round's backbone trains on this
$(R)/$(1)retrain.h5: $(R)/$(1)clusters.h5 $(R)/unlabelled.h5 $(R)/labelled.h5 \
                     $(if $(and $(JURY_CUT),$(4)),$(R)/$(1)pseudo_clusters.h5)
	$(CF)/cf-merge labels $$< --unlabelled-features $(R)/unlabelled.h5 \
	  --labelled-features $(R)/labelled.h5 --max-size $(PSEUDO_MAX_SIZE) \
	  --oversized $(PSEUDO_OVERSIZED) \
	  $(if $(and $(JURY_CUT),$(4)),--cores $(R)/$(1)pseudo_clusters.h5) -o $$@ \
	  --meta $(R)/$(1)retrain.meta $(QUIET)
endef

ifeq ($(SELF_TRAIN),yes)
# a draft pass as above from D_L; then the model learns again from D_L + the draft's
# pseudo-labels, with the rest of D_U unknown, and its pass makes the round's files
$(eval $(call LINK_PASS,draft_,labelled,$(CROWD),$(CROWD)))
$(R)/link_labelled.h5: $(R)/draft_retrain.h5 $(R)/labelled.h5 $(R)/unlabelled.h5
	$(CF)/cf-data carry-labels $< --labelled $(R)/labelled.h5 --unlabelled $(R)/unlabelled.h5 \
	  -o $@ $(QUIET)
$(eval $(call LINK_PASS,,link_labelled,,yes))
PSEUDO_JURY := $(JURY_CUT)
else
$(eval $(call LINK_PASS,,labelled,$(CROWD),$(CROWD)))
PSEUDO_JURY := $(and $(JURY_CUT),$(CROWD))
endif

# the unlabelled part's own labels (where known) are the truth: used to score, never to cluster
# (and, with a test part, the backbone's recognition of it under the key "recognition")
$(R)/eval.json: $(R)/clusters.h5 $(R)/unlabelled.h5 $(if $(HAVE_TEST),$(R)/recognition.json)
	$(CF)/cf-eval $< --truth $(R)/unlabelled.h5 --json -q \
	  $(if $(HAVE_TEST),--attach recognition=$(R)/recognition.json) > $@.tmp && mv $@.tmp $@

# every file named here, so none counts as an intermediate Make may skip or delete
ROUND_FILES := $(foreach p,labelled unlabelled,$(R)/knn_$(p).h5 $(R)/seq_$(p).h5) \
               $(if $(SELF_TRAIN),$(R)/knn_link_labelled.h5 $(R)/seq_link_labelled.h5 \
                 $(foreach f,model knn_unlabelled seq_unlabelled links clusters retrain \
                   $(if $(and $(JURY_CUT),$(CROWD)),pseudo_clusters),$(R)/draft_$(f).h5)) \
               $(R)/eval.json $(if $(filter images,$(MODE)),$(R)/retrain.h5) \
               $(if $(PSEUDO_JURY),$(R)/pseudo_clusters.h5) \
               $(if $(HAVE_TEST),$(R)/test.h5 $(R)/recognition.json)

round: setup $(ROUND_FILES)
	@echo "== round $(ROUND) on $(DATA): clusters of the unlabelled part vs their truth" >&2
	$(CF)/cf-eval $(R)/clusters.h5 --truth $(R)/unlabelled.h5
ifeq ($(HAVE_TEST),yes)
	@echo "== recognition of the test part (identities in neither D_L nor D_U), by backbone" >&2
	@$(CF)/cf-eval report $(WORK) -q
else ifneq ($(ROUND),1)
ifeq ($(MODE),images)
	@echo "== identification top-1 on the unlabelled identities: round $$(($(ROUND)-1)) vs round $(ROUND) backbone" >&2
	@echo "   (transductive: the round-$(ROUND) backbone trained on these images; no test part to score)" >&2
	$(CF)/cf-eval identify $(PREV)/unlabelled.h5
	$(CF)/cf-eval identify $(R)/unlabelled.h5
endif
endif
	@echo "== gallery of the clusters of the unlabelled part: $(R)/gallery/index.html" >&2

# ------------------------------------------------------------------ the gallery of D_U's clusters
# cards, thumbnails and plots (kNN quality, the decoder's threshold sweep, training curves)
round: $(R)/gallery/index.html

$(R)/knn_eval.json: $(R)/knn_unlabelled.h5 $(R)/unlabelled.h5
	$(CF)/cf-eval knn $< --truth $(R)/unlabelled.h5 --json -q > $@.tmp && mv $@.tmp $@

$(R)/sweep.json: $(R)/links.h5 $(R)/unlabelled.h5
	$(CF)/cf-eval sweep $< --truth $(R)/unlabelled.h5 --method $(DECODER) --json -q > $@.tmp \
	  && mv $@.tmp $@

$(R)/gallery/index.html: $(R)/clusters.h5 $(R)/unlabelled.h5 $(R)/links.h5 $(R)/model.h5 \
                         $(R)/knn_eval.json $(R)/sweep.json
	$(CF)/cf-eval gallery $< --features $(R)/unlabelled.h5 --links $(R)/links.h5 \
	  --truth $(R)/unlabelled.h5 --model $(R)/model.h5 --sweep $(R)/sweep.json \
	  --knn-eval $(R)/knn_eval.json --title "round $(ROUND) on $(DATA): clusters of D_U" \
	  -o $(R)/gallery $(QUIET) > /dev/null

# ------------------------------------------------------------------ references and the report
# Two backbones to judge round 2's against, on the same test part:
#   baseline     D_L alone, for as many optimisation steps as round 2's backbone took
#                (EMBED_ARGS' epochs over round1/retrain.h5), so more steps cannot pass
#                for better labels;
#   upper-bound  D_L + D_U with its true identities (where D_U's sub-folders give them),
#                the same number of steps: what perfect pseudo-labels would give.
# With FINETUNE=yes both fine-tune round 1's backbone, as round 2 does (same start, same
# seed, same steps): only the labels differ.
#   make round ROUND=2 baseline upper-bound report
REFERENCE_STEPS := $(WORK)/round1/retrain.h5
REFERENCE_INIT  := $(if $(filter yes,$(FINETUNE)),$(WORK)/round1/backbone.h5)
.PHONY: baseline upper-bound report

$(WORK)/baseline $(WORK)/upper-bound:
	mkdir -p $@

ifeq ($(MODE),images)
$(WORK)/baseline/backbone.h5: $(REFERENCE_STEPS) $(REFERENCE_INIT) $(IMAGES_DONE) | $(WORK)/baseline
	$(CF)/cf-embed train $(IMAGES)/labelled --match-steps $< $(if $(REFERENCE_INIT),--init \
	  $(REFERENCE_INIT)) -o $@ $(EMBED_ARGS) --seed $(SEED) $(QUIET)

$(WORK)/upper-bound/backbone.h5: $(REFERENCE_STEPS) $(REFERENCE_INIT) $(IMAGES_DONE) | $(WORK)/upper-bound
	$(CF)/cf-embed train $(IMAGES)/labelled $(IMAGES)/unlabelled --match-steps $< \
	  $(if $(REFERENCE_INIT),--init $(REFERENCE_INIT)) -o $@ $(EMBED_ARGS) --seed $(SEED) $(QUIET)

baseline upper-bound: %: setup $(if $(HAVE_TEST),$(WORK)/%/recognition.json,no-test-part)
	@echo "== $@: $(WORK)/$@/recognition.json (make report compares it with the rounds)" >&2
else
baseline upper-bound:
	@echo "make $@: the round was given features, not images: there is no backbone to train" >&2; exit 2
endif

.PHONY: no-test-part
no-test-part:
	@echo "no test part: give data/$(DATA)/test/<identity>/* (identities in neither D_L nor D_U)" >&2; exit 2

# clusters of D_U (F_P, F_B) and recognition of the test part per round, against the
# references; the share of the upper bound's gain each round recovers; a PNG plot
report: setup
	$(CF)/cf-eval report $(WORK) --png $(WORK)/report.png

# ------------------------------------------------------------------ new images into the clustering
# make add NEW=dir     new images (embedded by this round's backbone), or NEW=file (features:
#                      .npy/.h5/.bin) when the round was given features, put into the existing
#                      clusters of D_U by cf-merge add: old cluster ids are kept, merges are
#                      reported and recorded, every point keeps its batch id.
# Each add writes $(R)/add/<name of NEW>/{new,features,links,clusters}.h5; the next add
# starts from the last one ($(R)/add/LATEST names it), the first from the round's files.
.PHONY: add
ADD_DIR = $(R)/add/$(notdir $(abspath $(NEW)))
MERGE_LINKS ?= 3

add: setup $(R)/clusters.h5 $(R)/links.h5 $(R)/unlabelled.h5 $(R)/model.h5
	@test -n "$(NEW)" || { echo "make add: give NEW=<folder of images> (or, for a round on features, NEW=<features file>)" >&2; exit 2; }
	@test -e "$(NEW)" || { echo "make add: $(NEW): no such file or folder" >&2; exit 2; }
	@test ! -e $(ADD_DIR)/clusters.h5 || { echo "make add: $(ADD_DIR)/clusters.h5 exists: $(NEW) was added already" >&2; exit 2; }
	mkdir -p $(ADD_DIR)
ifeq ($(MODE),images)
	$(CF)/cf-embed extract $(R)/backbone.h5 $(NEW) -o $(ADD_DIR)/new.h5 --workers 1 $(QUIET)
else
	$(CF)/cf-data import $(NEW) -o $(ADD_DIR)/new.h5 $(QUIET)
endif
	@prev=$$(cat $(R)/add/LATEST 2>/dev/null); \
	if [ -n "$$prev" ]; then c=$$prev/clusters.h5 l=$$prev/links.h5 f=$$prev/features.h5; \
	else c=$(R)/clusters.h5 l=$(R)/links.h5 f=$(R)/unlabelled.h5; fi; \
	set -x; $(CF)/cf-merge add $$c --new $(ADD_DIR)/new.h5 --links $$l --features $$f \
	  --model $(R)/model.h5 -o $(ADD_DIR)/clusters.h5 --links-out $(ADD_DIR)/links.h5 \
	  --features-out $(ADD_DIR)/features.h5 --merge-links $(MERGE_LINKS) $(QUIET)
	echo $(ADD_DIR) > $(R)/add/LATEST
	@echo "== added $(NEW): $(ADD_DIR)/clusters.h5 (old + new; dataset 'batch' says which batch each point came in)" >&2
