# The round on DATA (default: the built-in demo set), one file per step under $(WORK).
CF := $(BIN)

$(WORK):
	mkdir -p $@

$(WORK)/features.h5: | $(WORK) setup
	$(CF)/cf-data demo $@ -n 20000 -d 128 --seed 0

$(WORK)/knn.h5: $(WORK)/features.h5
	$(CF)/cf-knn $< -o $@ -k 40

round: setup $(WORK)/knn.h5
	$(CF)/cf-eval knn $(WORK)/knn.h5 --truth $(WORK)/features.h5
