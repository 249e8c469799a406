// `protoquant explain RUN --test-index I | --image FILE [--top K] [--class C] [--patches N]
// [--out FILE.png]`: "this looks like that" for one test image of a finished run, or any image
// file through the run's eval transform; `--gallery [--per-page N]` draws every prototype's
// nearest training patches instead (explanation.h).
#include <fmt/format.h>

#include "command.h"
#include "report/explanation.h"
#include "report/pictures.h"
#include "run/run_records.h"
#include "protoquant/atomic_file.h"
#include "protoquant/experiment_run.h"
#include "protoquant/manifest.h"
#include "protoquant/status.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

class ExplainCommand : public Command {
 public:
  explicit ExplainCommand(CLI::App& app)
      : Command(app.add_subcommand("explain", "explain one test image of a finished run: its top prototypes, where "
                                              "they fire, their nearest training patches (PNG)")) {
    CLI::App* c = subcommand_;
    c->add_option("run_dir", run_dir_, "run folder")->required();
    c->add_option("--test-index", index_, "the sample of the evaluated split to explain")->check(non_negative_number());
    c->add_option("--image", image_, "explain this image file instead (decoded and transformed as the test images are)");
    c->add_flag("--gallery", gallery_, "draw the prototype gallery instead: pages of each prototype's nearest patches");
    c->add_option("--per-page", per_page_, "gallery: prototypes per page")->capture_default_str()->check(CLI::Range(1, 256));
    c->add_option("--top", top_, "prototypes shown")->capture_default_str()->check(CLI::Range(1, 64));
    c->add_option("--class", class_, "explain this class (default: the predicted one)")->check(non_negative_number());
    c->add_option("--patches", patches_, "nearest training patches per prototype (default: 4; 10 in the gallery)")
        ->check(CLI::Range(0, 16));
    c->add_option("--out", out_,
                  "the PNG (default: <run>/explanations/<split>-<index>.png); with --gallery a folder (default: "
                  "<run>/gallery/)");
  }

  absl::Status run(Registry& registry) override {
    const fs::path run_dir(run_dir_), manifest = run_dir / "manifest.toml";
    if (static_cast<int>(gallery_) + static_cast<int>(index_ >= 0) + static_cast<int>(!image_.empty()) != 1) {
      return absl::InvalidArgumentError("explain: give one of --test-index I, --image FILE or --gallery");
    }
    if (!image_.empty() && !fs::is_regular_file(image_)) {
      return absl::NotFoundError(fmt::format("{}: no such image file", image_));
    }
    if (!fs::exists(manifest)) return absl::NotFoundError(fmt::format("{}: not a run folder (no manifest.toml)", run_dir_));
    PQ_ASSIGN_OR_RETURN(const ExperimentSpec spec, load_experiment(manifest, {}, registry));
    ExperimentRun run(spec, registry, run_dir, RunMode::kOpen);
    PQ_RETURN_IF_ERROR(run.train_stages());
    const std::string split = spec.experiment.get_string("eval_split");
    const std::string train_split = spec.experiment.get_string("train_split");
    if (gallery_) return write_gallery(run, run_dir, train_split);
    Batch batch;
    std::string what;
    if (!image_.empty()) {
      PQ_ASSIGN_OR_RETURN(batch, run.dataset().load_image(image_));
      what = fs::path(image_).filename().string();
    } else {
      const int64_t size = run.dataset().size(split);
      if (index_ >= size) {
        return absl::OutOfRangeError(fmt::format("--test-index {}: split '{}' has samples 0..{}", index_, split, size - 1));
      }
      PQ_ASSIGN_OR_RETURN(batch, run.dataset().get_eval_batch(split, torch::tensor({index_}, torch::kInt64)));
      what = fmt::format("{} {}", split, index_);
    }
    PQ_ASSIGN_OR_RETURN(TensorSource* train, run.train_features());
    PQ_ASSIGN_OR_RETURN(const ImageFeatures features_of, run.image_features());
    const torch::Tensor image = batch.images.to(run.device());
    PQ_ASSIGN_OR_RETURN(Explanation e, explain_image(run.model(), image, *train, top_, class_, patches_ < 0 ? 4 : patches_,
                                                    features_of));
    e.label = batch.labels[0].item<int64_t>();
    PQ_ASSIGN_OR_RETURN(const cv::Mat picture,
                        draw_explanation(e, image.cpu(), batch.parts.defined() ? batch.parts[0] : torch::Tensor(),
                                         run.dataset(), train_split, run.model().backbone->geometry()));
    const std::string stem = image_.empty() ? fmt::format("{}-{}", split, index_) : "image-" + fs::path(image_).stem().string();
    const fs::path out = out_.empty() ? run_dir / "explanations" / (stem + ".png") : fs::path(out_);
    std::error_code ec;
    fs::create_directories(out.parent_path(), ec);
    PQ_RETURN_IF_ERROR(write_png(out, picture));
    fmt::print("{}: label {}, predicted {}; class {} score {:.4f}\n", what, e.label, e.predicted, e.explained_class,
               e.class_score);
    for (const auto& p : e.prototypes) {
      fmt::print("  prototype {:>5}: presence {:.4f} x weight {:.4f} = {:.4f}, peak at (row {}, column {})\n", p.prototype,
                 p.presence, p.weight, p.contribution, p.peak_row, p.peak_column);
    }
    fmt::print("explanation: {}\n", out.string());
    return absl::OkStatus();
  }

 private:
  absl::Status write_gallery(ExperimentRun& run, const fs::path& run_dir, const std::string& train_split) {
    PQ_ASSIGN_OR_RETURN(TensorSource* train, run.train_features());
    GalleryOptions options;
    const int64_t prototypes = run.model().head->class_weights().size(1);
    if (auto results = read_json_file(run_dir / "results.json"); results.ok()) options.usage = recorded_usage(*results, prototypes);
    options.purity = recorded_purity(run_dir, prototypes);
    options.patches = patches_ < 0 ? 10 : patches_;
    options.per_page = per_page_;
    PQ_ASSIGN_OR_RETURN(const std::vector<cv::Mat> pages, draw_gallery(run.model(), *train, run.dataset(), train_split, options));
    const fs::path out = out_.empty() ? run_dir / "gallery" : fs::path(out_);
    std::error_code ec;
    fs::create_directories(out, ec);
    if (ec) return absl::PermissionDeniedError(fmt::format("{}: cannot create ({})", out.string(), ec.message()));
    for (size_t i = 0; i < pages.size(); ++i) {
      PQ_RETURN_IF_ERROR(write_png(out / fmt::format("gallery-{:03d}.png", i + 1), pages[i]));
    }
    fmt::print("gallery: {} page(s) in {}\n", pages.size(), out.string());
    return absl::OkStatus();
  }

  std::string run_dir_, out_, image_;
  int64_t index_ = -1, top_ = 5, class_ = -1, patches_ = -1, per_page_ = 16;
  bool gallery_ = false;
};

}  // namespace

std::unique_ptr<Command> make_explain_command(CLI::App& app) { return std::make_unique<ExplainCommand>(app); }

}  // namespace protoquant
