// synthparts written to disk: the CUB-200-2011 layout (how the cub200 fixtures are made) and
// the image_folder layout.
#include <fmt/format.h>

#include "protoquant/atomic_file.h"
#include "protoquant/status.h"
#include "synthparts.h"

namespace protoquant::datasets {
namespace fs = std::filesystem;

absl::Status write_cub(const SynthParts& data, const fs::path& root, const std::string& extension, int jpeg_quality) {
  const auto classes = data.class_names();
  const auto parts = data.part_names();
  std::string images, labels, split_flags, boxes, part_locs, class_list, part_list;
  for (size_t c = 0; c < classes.size(); ++c) class_list += fmt::format("{} {:03d}.{}\n", c + 1, c + 1, classes[c]);
  for (size_t p = 0; p < parts.size(); ++p) part_list += fmt::format("{} {}\n", p + 1, parts[p]);
  int64_t id = 0;
  for (const std::string split : {"train", "test"}) {
    for (int64_t i = 0; i < data.size(split); ++i) {
      ++id;
      const SynthImage drawn = data.draw(split, i);
      const auto c = static_cast<size_t>(drawn.label);
      const std::string name = fmt::format("{:03d}.{}/{}_{:05d}.{}", c + 1, classes[c], split, i, extension);
      fs::create_directories((root / "images" / name).parent_path());
      PQ_RETURN_IF_ERROR(write_image(root / "images" / name, drawn.image, jpeg_quality));
      images += fmt::format("{} {}\n", id, name);
      labels += fmt::format("{} {}\n", id, c + 1);
      split_flags += fmt::format("{} {}\n", id, split == "train" ? 1 : 0);
      boxes += fmt::format("{} {:.1f} {:.1f} {:.1f} {:.1f}\n", id, drawn.box.x, drawn.box.y, drawn.box.width,
                           drawn.box.height);
      for (size_t p = 0; p < drawn.parts.size(); ++p) {
        // CUB writes 0 0 0 for a part that is not visible.
        const auto& k = drawn.parts[p];
        part_locs += k.visible ? fmt::format("{} {} {:.1f} {:.1f} 1\n", id, p + 1, k.x, k.y)
                               : fmt::format("{} {} 0.0 0.0 0\n", id, p + 1);
      }
    }
  }
  fs::create_directories(root / "parts");
  PQ_RETURN_IF_ERROR(write_file_atomic(root / "classes.txt", class_list));
  PQ_RETURN_IF_ERROR(write_file_atomic(root / "images.txt", images));
  PQ_RETURN_IF_ERROR(write_file_atomic(root / "image_class_labels.txt", labels));
  PQ_RETURN_IF_ERROR(write_file_atomic(root / "train_test_split.txt", split_flags));
  PQ_RETURN_IF_ERROR(write_file_atomic(root / "bounding_boxes.txt", boxes));
  PQ_RETURN_IF_ERROR(write_file_atomic(root / "parts" / "parts.txt", part_list));
  return write_file_atomic(root / "parts" / "part_locs.txt", part_locs);
}

absl::Status write_image_folder(const SynthParts& data, const fs::path& root, const std::string& extension,
                                int jpeg_quality) {
  const auto classes = data.class_names();
  for (const std::string split : {"train", "test"}) {
    for (int64_t i = 0; i < data.size(split); ++i) {
      const SynthImage drawn = data.draw(split, i);
      const fs::path file =
          root / split / classes[static_cast<size_t>(drawn.label)] / fmt::format("{:05d}.{}", i, extension);
      fs::create_directories(file.parent_path());
      PQ_RETURN_IF_ERROR(write_image(file, drawn.image, jpeg_quality));
    }
  }
  return absl::OkStatus();
}

}  // namespace protoquant::datasets
