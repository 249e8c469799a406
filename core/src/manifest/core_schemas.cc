#include "core_schemas.h"

#include <map>
#include <stdexcept>

namespace protoquant {

const ParamSchema& experiment_schema() {
  static const ParamSchema schema = [] {
    ParamSchema s;
    s.add(ParamSpec::String("name", "", "run name; defaults to the manifest's file name"));
    s.add(ParamSpec::Int("seed", 0, "seed of every random choice (init, shuffling, augmentation)").min(0));
    s.add(ParamSpec::Int("threads", 0, "CPU threads for LibTorch; 0 = all hardware threads").range(0, 1024));
    s.add(ParamSpec::String("device", "cpu", "where tensors live").one_of({"cpu", "cuda"}));
    s.add(ParamSpec::String("output", "runs", "folder under which each run gets its own folder"));
    s.add(ParamSpec::String("train_split", "train", "split the stages train on"));
    s.add(ParamSpec::String("eval_split", "test", "split the metrics are measured on"));
    s.add(ParamSpec::String("store", "",
                            "artifact store: every stage's outputs under its key, reused by any run with the same "
                            "inputs; empty = a folder 'store' beside the run folder")
              .path());
    s.add(ParamSpec::Bool("store_features", false,
                          "also file the frozen backbone's features in the store (fp32: 4 x D x H x W bytes per image)"));
    s.add(ParamSpec::String("feature_dtype", "fp32", "dtype features are kept (and cached) in")
              .one_of({"fp32", "fp16", "bf16"}));
    s.add(ParamSpec::String("backbone_precision", "fp32",
                            "the backbone's arithmetic in stage 0 and wherever it runs on images (feature "
                            "extraction, metrics): bf16 = mixed precision under autocast (fp32 weights and loss); "
                            "needs a CPU with AVX512-BF16 or AMX, or CUDA; auto = bf16 on a CPU that has them, "
                            "else fp32")
              .one_of({"fp32", "bf16", "auto"}));
    s.add(ParamSpec::String("validation_split", "",
                            "split that keep_best and pruning measure on; empty = eval_split (as the paper's code)"));
    return s;
  }();
  return schema;
}

const ParamSchema& report_schema() {
  static const ParamSchema schema = [] {
    ParamSchema s;
    s.add(ParamSpec::Bool("enabled", true, "write report.html into the run folder when the run ends"));
    s.add(ParamSpec::Int("explanations_per_class", 1,
                         "local explanations of the first test images of each class (explanations/*.png, in the "
                         "report); 0 = none")
              .range(0, 16));
    s.add(ParamSpec::Int("gallery_prototypes", 16, "prototypes in the report's gallery, most used first; 0 = none")
              .range(0, 1024));
    s.add(ParamSpec::Int("patches", 6, "nearest training patches per prototype in the gallery and explanations")
              .range(1, 16));
    s.add(ParamSpec::Int("max_classes", 20, "classes with explanations in the report (the first ones)").range(1, 1000));
    return s;
  }();
  return schema;
}

const std::vector<std::string>& stage_names() {
  static const std::vector<std::string> names = {"blackbox", "codebook", "prune", "head", "limit"};
  return names;
}

namespace {

ParamSchema trainer_schema() {
  ParamSchema s;
  s.add(ParamSpec::Int("epochs", 2, "passes over the training split; 0 skips training").range(0, 100000));
  s.add(ParamSpec::Int("batch_size", 128, "samples per optimisation step").range(1, 1 << 20));
  s.add(ParamSpec::Int("eval_batch_size", 256, "samples per forward pass when evaluating").range(1, 1 << 20));
  s.add(ParamSpec::String("optimizer", "adam", "optimiser").one_of({"adam", "adamw", "sgd"}));
  s.add(ParamSpec::Float("lr", 1e-3, "peak learning rate").range(0.0, 100.0));
  s.add(ParamSpec::Float("weight_decay", 0.0, "L2 (adam, sgd) or decoupled (adamw) weight decay").range(0.0, 10.0));
  s.add(ParamSpec::Float("momentum", 0.9, "SGD momentum").range(0.0, 1.0));
  s.add(ParamSpec::String("schedule", "cosine", "learning-rate schedule after warm-up").one_of({"cosine", "constant"}));
  s.add(ParamSpec::Float("warmup_epochs", 0.1, "linear warm-up length, in epochs (fractions allowed)").range(0.0, 1000.0));
  s.add(ParamSpec::Float("label_smoothing", 0.0, "label smoothing of the cross-entropy").range(0.0, 0.999));
  s.add(ParamSpec::Float("mixup", 0.0, "Mixup Beta(alpha, alpha); 0 = off (the paper: 0.8 on ImageNet)").range(0.0, 100.0));
  s.add(ParamSpec::Float("cutmix", 0.0, "CutMix Beta(alpha, alpha); 0 = off (the paper: 1.0 on ImageNet)").range(0.0, 100.0));
  s.add(ParamSpec::Float("mix_probability", 1.0, "chance that a batch is mixed when mixup or cutmix is on").range(0.0, 1.0));
  s.add(ParamSpec::Float("mix_switch", 0.5, "with both on: chance of CutMix rather than Mixup").range(0.0, 1.0));
  s.add(ParamSpec::Bool("keep_best", false, "validate after every epoch and keep the best epoch's state"));
  s.add(ParamSpec::Bool("validate_each_epoch", false,
                        "measure the validation accuracy after every epoch for the training curves (keep_best does "
                        "it anyway)"));
  return s;
}

}  // namespace

const ParamSchema& stage_schema(const std::string& stage) {
  static const std::map<std::string, ParamSchema> schemas = [] {
    std::map<std::string, ParamSchema> m;
    m["blackbox"] = trainer_schema().with_default("lr", 2e-3);
    m["blackbox"].add(ParamSpec::String("weights", "",
                                        "load the backbone (and its head g) from this file, e.g. an earlier run's "
                                        "model/backbone.pt, instead of training it")
                          .path());
    m["blackbox"].add(ParamSpec::Bool("sync_batchnorm", false,
                                      "data-parallel: batch norm normalises with the moments of the whole global "
                                      "batch (all-reduced over the ranks, as SyncBatchNorm) instead of each rank's "
                                      "share"));
    m["codebook"] = trainer_schema().with_default("lr", 5e-3).with_default("label_smoothing", 0.1);
    m["codebook"].add(ParamSpec::Float("task_weight", 1.0, "w_task: weight of CE(g(Zq), y)").range(0.0, 1e6));
    m["codebook"].add(ParamSpec::Float("codebook_weight", 1.0, "w_cb: weight of the quantizer's codebook loss").range(0.0, 1e6));
    m["codebook"] = m["codebook"].with_default("keep_best", true);
    m["prune"] = trainer_schema().with_default("lr", 5e-3).with_default("label_smoothing", 0.1).with_default("epochs", 1);
    m["prune"].add(ParamSpec::Int("target", 0, "codes per codebook after pruning; 0 = no pruning").min(0));
    m["prune"].add(ParamSpec::Int("steps", 8, "pruning steps from K down to target").range(1, 10000));
    // The head trains on cached features, so its validation curve costs one head pass per epoch.
    m["head"] = trainer_schema().with_default("lr", 5e-3).with_default("label_smoothing", 0.1).with_default(
        "validate_each_epoch", true);
    // Fine-tuning a limited head: the head's recipe, shorter.
    m["limit"] = trainer_schema().with_default("lr", 5e-3).with_default("label_smoothing", 0.1).with_default(
        "validate_each_epoch", true);
    m["limit"].add(ParamSpec::Int("k", 0, "prototypes kept per class (limit-k), then fine-tuned; 0 = no limit stage")
                       .min(0));
    m["limit"].add(ParamSpec::Bool("prune_unused", true,
                                   "remove the prototypes no class uses after limit-k (from the codebook too when "
                                   "its codes are the head's prototypes)"));
    m["limit"].add(ParamSpec::Bool("keep_removed_in_softmax", true,
                                   "removed prototypes still compete in the softmax over prototypes, so removing "
                                   "them changes no prediction"));
    m["limit"].add(ParamSpec::Bool("train_prototypes", true,
                                   "fine-tune the kept prototypes too, not only their weights (as the head stage "
                                   "does by default)"));
    return m;
  }();
  auto it = schemas.find(stage);
  if (it == schemas.end()) throw std::out_of_range("no stage " + stage);
  return it->second;
}

}  // namespace protoquant
