#include "image_folder.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "protoquant/status.h"

namespace protoquant::datasets {
namespace fs = std::filesystem;

namespace {

std::vector<fs::path> sorted_entries(const fs::path& folder, bool directories) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (entry.is_directory() == directories) out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Every regular file under `folder`, at any depth, sorted (torchvision walks class folders
// recursively too). Linked folders are followed once: a link back to a folder already walked (a
// symlink loop) is skipped with a warning instead of recursing until the path is too long. A
// folder that cannot be read fails the walk: training on part of a class is no option.
absl::StatusOr<std::vector<fs::path>> files_under(const fs::path& folder) {
  std::vector<fs::path> out;
  std::error_code ec;
  const fs::path start = fs::canonical(folder, ec);
  std::set<fs::path> walked = {start};
  // A folder at or above `start` holds `start` itself: following a link to it never ends.
  auto above_start = [&](const fs::path& real) {
    const auto [mismatch, rest] = std::mismatch(real.begin(), real.end(), start.begin(), start.end());
    return mismatch == real.end();
  };
  fs::recursive_directory_iterator it(folder, fs::directory_options::follow_directory_symlink, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    if (entry.is_directory(ec)) {
      const fs::path real = fs::canonical(entry.path(), ec);
      if (ec || above_start(real) || !walked.insert(real).second) {
        fmt::print(stderr, "warning: {}: {}; skipped\n", entry.path().string(),
                   ec ? ec.message() : fmt::format("links to {} (a symlink loop, or a folder read already)", real.string()));
        it.disable_recursion_pending();
        ec.clear();
      }
    } else if (entry.is_regular_file(ec)) {
      out.push_back(entry.path());
    }
    ec.clear();
  }
  if (ec) {
    return absl::PermissionDeniedError(fmt::format("{}: cannot read a folder under it: {}", folder.string(), ec.message()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

ParamSchema ImageFolderDataset::schema() {
  ParamSchema schema{
      ParamSpec::Required("root", ParamType::kString, "folder holding one folder per split").path(),
      ParamSpec::StringList("splits", {}, "split folders to read (default: every folder under root)"),
      ParamSpec::String("layout", "split/class",
                        "split/class: root/<split>/<class>/<image>; files: every image under root as one "
                        "unlabelled 'train' split")
          .one_of({"split/class", "files"})};
  return schema.extend(image_param_schema({"random_resized_crop:224", "hflip"}, {"resize:256", "center_crop:224"}));
}

absl::StatusOr<std::shared_ptr<ImageFolderDataset>> ImageFolderDataset::open(const Params& params,
                                                                             const BuildContext& context) {
  const fs::path root = params.get_string("root");
  if (!fs::is_directory(root)) return absl::NotFoundError(fmt::format("{}: dataset folder not found", root.string()));
  auto options = ImageOptions::from(params, context);
  if (!options.ok()) return absl::InvalidArgumentError(fmt::format("{}: {}", root.string(), std::string(options.status().message())));
  auto pool = std::make_shared<WorkerPool>(options->threads);

  DatasetInfo info;
  info.name = "image_folder:" + fs::absolute(root).lexically_normal().filename().string();
  BadSamples bad;
  std::map<std::string, std::vector<ImageRecord>> splits;

  if (params.get_string("layout") == "files") {
    info.class_names = {"all"};
    auto& records = splits["train"];
    PQ_ASSIGN_OR_RETURN(const std::vector<fs::path> files, files_under(root));
    for (const auto& file : files) {
      if (has_image_extension(file)) records.push_back({file.string(), 0, {}, {}, {}});
    }
    if (records.empty()) return absl::NotFoundError(fmt::format("{}: no .jpg, .jpeg or .png files", root.string()));
  } else {
    std::vector<std::string> split_names = params.get_string_list("splits");
    if (split_names.empty()) {
      for (const auto& dir : sorted_entries(root, true)) split_names.push_back(dir.filename().string());
    }
    if (split_names.empty()) return absl::NotFoundError(fmt::format("{}: no split folders", root.string()));
    std::set<std::string> class_set;
    for (const auto& split : split_names) {
      const fs::path dir = root / split;
      if (!fs::is_directory(dir)) return absl::NotFoundError(fmt::format("{}: split folder not found", dir.string()));
      for (const auto& class_dir : sorted_entries(dir, true)) class_set.insert(class_dir.filename().string());
    }
    if (class_set.empty()) return absl::NotFoundError(fmt::format("{}: no class folders in any split", root.string()));
    info.class_names.assign(class_set.begin(), class_set.end());
    for (const auto& split : split_names) {
      auto& records = splits[split];
      const fs::path dir = root / split;
      for (const auto& stray : sorted_entries(dir, false)) bad.add(split, stray.string(), "not inside a class folder");
      for (int64_t label = 0; label < static_cast<int64_t>(info.class_names.size()); ++label) {
        const fs::path class_dir = dir / info.class_names[static_cast<size_t>(label)];
        if (!fs::is_directory(class_dir)) continue;  // a class this split lacks
        size_t images = 0;
        PQ_ASSIGN_OR_RETURN(const std::vector<fs::path> files, files_under(class_dir));
        for (const auto& file : files) {
          if (!has_image_extension(file)) {
            bad.add(split, file.string(), "not an image file (expected .jpg, .jpeg or .png)");
            continue;
          }
          records.push_back({file.string(), label, {}, {}, {}});
          ++images;
        }
        if (images == 0) bad.add(split, class_dir.string(), "empty class folder (no images)");
      }
    }
  }
  // Header and end-marker check of every image, in parallel: a truncated or corrupt file is
  // caught here, before training, not as a half-grey image in some epoch.
  for (auto& [split, records] : splits) {
    const auto headers = probe_records(records, *pool);
    std::vector<ImageRecord> kept;
    kept.reserve(records.size());
    for (size_t i = 0; i < records.size(); ++i) {
      if (headers[i].ok()) {
        kept.push_back(std::move(records[i]));
      } else {
        bad.add(split, records[i].file, std::string(headers[i].status().message()));
      }
    }
    records = std::move(kept);
    info.splits.push_back(split);
  }
  if (auto status = bad.finish(info.name, options->fail_on_bad, info); !status.ok()) return status;
  info.num_classes = static_cast<int64_t>(info.class_names.size());
  std::vector<std::string> counts;
  for (const auto& [split, records] : splits) counts.push_back(fmt::format("{}={}", split, records.size()));
  const std::string identity = fmt::format("image_folder|{}|{}|{}|{}|skipped={}", fs::absolute(root).string(),
                                           params.get_string("layout"), fmt::join(counts, ","), options->summary,
                                           info.skipped.size());
  return std::shared_ptr<ImageFolderDataset>(
      new ImageFolderDataset(std::move(info), std::move(*options), std::move(splits), identity, std::move(pool)));
}

}  // namespace protoquant::datasets
