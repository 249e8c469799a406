// The image datasets through the registry: synthparts (determinism, ground truth), its CUB and
// ImageFolder exports read back by cub200 and image_folder, loader determinism across thread
// counts and with prefetch, every bad-data case under both policies, and `protoquant data`.
#include <zlib.h>

#include <fstream>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "datasets/image/decode.h"
#include "datasets/image/synthparts.h"
#include "protoquant/digest.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;
using datasets::SynthParts;
using datasets::SynthPartsConfig;

SynthPartsConfig small_config() {
  SynthPartsConfig config;
  config.classes = 3;
  config.train_per_class = 4;
  config.test_per_class = 2;
  config.parts = 6;
  config.parts_per_class = 3;
  config.image_size = 48;
  config.seed = 5;
  return config;
}

std::shared_ptr<Dataset> build_dataset(const std::string& type, const std::map<std::string, ParamValue>& values,
                               uint64_t seed = 0) {
  auto& registry = testing::builtin_registry();
  const auto* entry = registry.datasets.find(type);
  EXPECT_NE(entry, nullptr);
  Params params = Params::defaults(entry->schema);
  for (const auto& [key, value] : values) params.set(key, value);
  BuildContext context;
  context.seed = seed;
  auto dataset = registry.datasets.build(type, params, context);
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return dataset.ok() ? *dataset : nullptr;
}

absl::Status build_status(const std::string& type, const std::map<std::string, ParamValue>& values) {
  auto& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.datasets.find(type)->schema);
  for (const auto& [key, value] : values) params.set(key, value);
  return registry.datasets.build(type, params, {}).status();
}

void expect_equal_batches(const Batch& a, const Batch& b) {
  EXPECT_TRUE(torch::equal(a.images, b.images));
  EXPECT_TRUE(torch::equal(a.labels, b.labels));
  if (a.parts.defined()) EXPECT_TRUE(torch::equal(a.parts, b.parts));
  if (a.boxes.defined()) EXPECT_TRUE(torch::equal(a.boxes, b.boxes));
}

std::string message_of(const absl::Status& status) { return std::string(status.message()); }

// root plus one transform for both train and eval, e.g. "center_crop:32".
std::map<std::string, ParamValue> plain(const fs::path& root, const std::string& transform) {
  return {{"root", root.string()},
          {"train_transform", std::vector<std::string>{transform}},
          {"eval_transform", std::vector<std::string>{transform}}};
}

TEST(SynthParts, SameSeedSameImagesAndGroundTruthIsConsistent) {
  auto a = SynthParts::create(small_config());
  auto b = SynthParts::create(small_config());
  ASSERT_TRUE(a.ok() && b.ok());
  SynthPartsConfig other = small_config();
  other.seed = 6;
  auto c = SynthParts::create(other);
  ASSERT_TRUE(c.ok());
  const auto x = a->draw("train", 7), y = b->draw("train", 7), z = c->draw("train", 7);
  EXPECT_EQ(cv::norm(x.image, y.image, cv::NORM_INF), 0.0);
  EXPECT_GT(cv::norm(x.image, z.image, cv::NORM_INF), 0.0);
  EXPECT_EQ(x.label, 7 % 3);
  // Classes are distinct part combinations; only a class's own parts are ever drawn.
  EXPECT_NE(a->class_parts(0), a->class_parts(1));
  int visible = 0;
  for (int64_t i = 0; i < a->size("train"); ++i) {
    const auto s = a->draw("train", i);
    const auto& own = a->class_parts(s.label);
    for (size_t p = 0; p < s.parts.size(); ++p) {
      const bool is_own = std::find(own.begin(), own.end(), static_cast<int64_t>(p)) != own.end();
      if (!is_own) EXPECT_FALSE(s.parts[p].visible);
      if (!s.parts[p].visible) continue;
      ++visible;
      // The keypoint is the centre of the part's box, inside the image and inside the object box.
      const auto& box = s.part_boxes[p];
      EXPECT_FLOAT_EQ(s.parts[p].x, box.x + box.width / 2);
      EXPECT_TRUE(s.box.contains(cv::Point2f(s.parts[p].x, s.parts[p].y)));
    }
  }
  EXPECT_GT(visible, 12);
  SynthPartsConfig impossible = small_config();
  impossible.classes = 100;  // C(6, 3) = 20 combinations
  EXPECT_FALSE(SynthParts::create(impossible).ok());
}

// What synthparts draws must not change under the same identity: stored features and stage
// keys name the dataset by its settings, not by its pixels. So the shipped manifests' content
// (10 classes of 4 of 12 parts, 64 px, clutter 0.5) is pinned by a digest of samples of both
// splits, recorded from the generator every published synthparts figure came from. A change
// that moves a pixel or a keypoint must change SynthPartsDataset's identity, then this digest.
TEST(SynthParts, ContentIsPinnedUnderItsIdentity) {
  SynthPartsConfig config;
  config.classes = 10;
  config.parts = 12;
  config.parts_per_class = 4;
  config.image_size = 64;
  config.clutter = 0.5;
  auto data = SynthParts::create(config);
  ASSERT_TRUE(data.ok()) << data.status();
  std::string bytes;
  for (const std::string split : {"train", "test"}) {
    for (int64_t i = 0; i < 40; ++i) {
      const auto drawn = data->draw(split, i);
      ASSERT_TRUE(drawn.image.isContinuous());
      bytes.append(reinterpret_cast<const char*>(drawn.image.data), drawn.image.total() * drawn.image.elemSize());
      for (const auto& p : drawn.parts) bytes += fmt::format("{} {} {};", p.x, p.y, p.visible);
    }
  }
  EXPECT_EQ(sha256_hex(bytes), "7cb58d35594c2cdec69e7abdc16f76180b2580262a52d5486ff08a837644e791");
}

TEST(ImageLoader, SameSeedSameBatchesForAnyThreadCountAndWithPrefetch) {
  const std::map<std::string, ParamValue> params{
      {"classes", int64_t{3}}, {"train_per_class", int64_t{6}}, {"image_size", int64_t{40}},
      {"train_transform", std::vector<std::string>{"random_resized_crop:32:0.5", "hflip", "trivial_augment", "random_erasing:0.5"}},
      {"eval_transform", std::vector<std::string>{"center_crop:32"}}};
  auto one = params, three = params;
  one["threads"] = int64_t{1};
  three["threads"] = int64_t{3};
  auto a = build_dataset("synthparts", one, 11), b = build_dataset("synthparts", three, 11), c = build_dataset("synthparts", three, 12);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->info().height, 32);
  const auto first = torch::tensor({4, 0, 17, 9, 3}, torch::kInt64);
  const auto second = torch::tensor({5, 1, 2}, torch::kInt64);
  auto a1 = a->get_batch("train", first), a2 = a->get_batch("train", second), a3 = a->get_batch("train", first);
  // b is told the next batch before it is asked for the current one, as the trainer does.
  b->prefetch("train", second, true);
  auto b1 = b->get_batch("train", first);
  b->prefetch("train", first, true);
  auto b2 = b->get_batch("train", second);
  auto b3 = b->get_batch("train", first);
  ASSERT_TRUE(a1.ok() && a2.ok() && a3.ok() && b1.ok() && b2.ok() && b3.ok());
  expect_equal_batches(*a1, *b1);
  expect_equal_batches(*a2, *b2);
  expect_equal_batches(*a3, *b3);
  EXPECT_EQ(a1->images.sizes(), (std::vector<int64_t>{5, 3, 32, 32}));
  EXPECT_EQ(a1->parts.sizes(), (std::vector<int64_t>{5, 12, 3}));  // P = the default vocabulary
  // A sample drawn again is augmented afresh; another seed augments differently.
  EXPECT_FALSE(torch::equal(a1->images, a3->images));
  auto c1 = c->get_batch("train", first);
  ASSERT_TRUE(c1.ok());
  EXPECT_FALSE(torch::equal(a1->images, c1->images));
  EXPECT_TRUE(torch::equal(a1->labels, c1->labels));
  // Eval batches are the same every time, and differ from augmented ones.
  auto e1 = a->get_eval_batch("train", first), e2 = b->get_eval_batch("train", first);
  ASSERT_TRUE(e1.ok() && e2.ok());
  expect_equal_batches(*e1, *e2);
  EXPECT_FALSE(torch::equal(e1->images, a1->images));
  // Out-of-range indices and unknown splits are errors, not crashes.
  EXPECT_FALSE(a->get_batch("train", torch::tensor({18}, torch::kInt64)).ok());
  EXPECT_FALSE(a->get_batch("val", first).ok());
}

TEST(Cub200, ReadsSynthPartsWrittenInTheCubLayout) {
  testing::TempDir dir;
  auto data = SynthParts::create(small_config());
  ASSERT_TRUE(data.ok());
  ASSERT_TRUE(datasets::write_cub(*data, dir.path()).ok());
  auto cub = build_dataset("cub200", plain(dir.path(), "center_crop:48"));
  ASSERT_TRUE(cub);
  const auto& info = cub->info();
  EXPECT_EQ(info.num_classes, 3);
  EXPECT_EQ(cub->size("train"), 12);
  EXPECT_EQ(cub->size("test"), 6);
  EXPECT_TRUE(info.has_parts);
  EXPECT_TRUE(info.has_boxes);
  EXPECT_EQ(info.part_names, data->part_names());
  EXPECT_EQ(info.class_names[1], "002.class_001");  // classes.txt, CUB-style names
  EXPECT_TRUE(info.skipped.empty());
  auto batch = cub->get_eval_batch("test", torch::arange(6, torch::kInt64));
  ASSERT_TRUE(batch.ok()) << batch.status();
  for (int64_t i = 0; i < 6; ++i) {
    const auto drawn = data->draw("test", i);
    EXPECT_EQ(batch->labels[i].item<int64_t>(), drawn.label);
    for (size_t p = 0; p < drawn.parts.size(); ++p) {
      const auto got = batch->parts[i][static_cast<int64_t>(p)];
      EXPECT_EQ(got[2].item<float>(), drawn.parts[p].visible ? 1.0f : 0.0f);
      if (drawn.parts[p].visible) {
        EXPECT_FLOAT_EQ(got[0].item<float>(), drawn.parts[p].x);
        EXPECT_FLOAT_EQ(got[1].item<float>(), drawn.parts[p].y);
      }
    }
    EXPECT_FLOAT_EQ(batch->boxes[i][2].item<float>(), drawn.box.x + drawn.box.width);
  }

  // crop_to_box then resize: keypoints land where the same crop and resize put them.
  auto crop_params = plain(dir.path(), "resize:32x32");
  crop_params["crop_to_box"] = true;
  auto cropped = build_dataset("cub200", crop_params);
  ASSERT_TRUE(cropped);
  auto small = cropped->get_eval_batch("train", torch::arange(12, torch::kInt64));
  ASSERT_TRUE(small.ok());
  for (int64_t i = 0; i < 12; ++i) {
    const auto drawn = data->draw("train", i);
    const cv::Rect2f b = drawn.box;
    for (size_t p = 0; p < drawn.parts.size(); ++p) {
      if (!drawn.parts[p].visible) continue;
      const float ex = (drawn.parts[p].x - b.x + 0.5f) * 32.0f / b.width - 0.5f;
      const float ey = (drawn.parts[p].y - b.y + 0.5f) * 32.0f / b.height - 0.5f;
      EXPECT_NEAR(small->parts[i][static_cast<int64_t>(p)][0].item<float>(), ex, 1e-3);
      EXPECT_NEAR(small->parts[i][static_cast<int64_t>(p)][1].item<float>(), ey, 1e-3);
    }
  }
}

TEST(ImageFolder, ClassesFromSortedFoldersAndSplitsFromTheTree) {
  testing::TempDir dir;
  auto data = SynthParts::create(small_config());
  ASSERT_TRUE(data.ok());
  ASSERT_TRUE(datasets::write_image_folder(*data, dir.path()).ok());
  auto folder = build_dataset("image_folder", {{"root", dir.path().string()},
                                       {"train_transform", std::vector<std::string>{"random_resized_crop:32", "hflip"}},
                                       {"eval_transform", std::vector<std::string>{"resize:36", "center_crop:32"}}});
  ASSERT_TRUE(folder);
  EXPECT_EQ(folder->info().splits, (std::vector<std::string>{"test", "train"}));
  EXPECT_EQ(folder->info().class_names, (std::vector<std::string>{"class_000", "class_001", "class_002"}));
  EXPECT_EQ(folder->size("train"), 12);
  EXPECT_FALSE(folder->info().has_parts);
  auto batch = folder->get_batch("train", torch::arange(12, torch::kInt64));
  ASSERT_TRUE(batch.ok());
  // Files are sorted by class folder, so labels ascend: four per class.
  EXPECT_TRUE(torch::equal(batch->labels, torch::tensor({0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2}, torch::kInt64)));
  EXPECT_FALSE(batch->parts.defined());
  // The eval transform of a JPEG matches an independent OpenCV resize + crop (JPEG decoded alike).
  auto eval = folder->get_eval_batch("test", torch::tensor({0}, torch::kInt64));
  ASSERT_TRUE(eval.ok());
  cv::Mat reference = cv::imread((dir / "test/class_000/00000.jpg").string(), cv::IMREAD_COLOR), resized;
  cv::resize(reference, resized, cv::Size(36, 36), 0, 0, cv::INTER_LINEAR);
  const cv::Vec3b pixel = resized.at<cv::Vec3b>(2 + 5, 2 + 7);
  EXPECT_NEAR(eval->images[0][0][5][7].item<float>(), (pixel[2] / 255.0 - 0.485) / 0.229, 1e-4);
  EXPECT_NEAR(eval->images[0][2][5][7].item<float>(), (pixel[0] / 255.0 - 0.406) / 0.225, 1e-4);
}

// A link from a class folder back up the tree (a symlink loop) is skipped with a warning: the
// images are read once and the dataset opens, instead of failing on an ever longer path.
TEST(ImageFolder, ASymlinkLoopIsSkippedAndEachImageReadOnce) {
  testing::TempDir dir;
  auto data = SynthParts::create(small_config());
  ASSERT_TRUE(data.ok());
  ASSERT_TRUE(datasets::write_image_folder(*data, dir.path()).ok());
  fs::create_directory_symlink(dir.path() / "train", dir / "train" / "class_001" / "loop");
  auto folder = build_dataset("image_folder", {{"root", dir.path().string()},
                                       {"train_transform", std::vector<std::string>{"center_crop:32"}},
                                       {"eval_transform", std::vector<std::string>{"center_crop:32"}}});
  ASSERT_TRUE(folder);
  EXPECT_EQ(folder->size("train"), 12);
}

// A PNG whose header, chunk CRCs and end marker are all valid but whose image data is only
// `idat_bytes` zero bytes (8 x 8 RGB needs 8 x (1 + 24) = 200): libpng fails it only when it
// decodes it.
std::string png_with_short_data(size_t idat_bytes, uint32_t side = 8) {
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
  };
  auto chunk = [&](const std::string& type, const std::string& data) {
    const std::string body = type + data;
    return be32(static_cast<uint32_t>(data.size())) + body +
           be32(static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
  };
  const std::string raw(idat_bytes, '\0');
  std::string deflated(compressBound(raw.size()), '\0');
  uLongf length = deflated.size();
  compress(reinterpret_cast<Bytef*>(deflated.data()), &length, reinterpret_cast<const Bytef*>(raw.data()), raw.size());
  deflated.resize(length);
  const std::string ihdr = be32(side) + be32(side) + std::string{8, 2, 0, 0, 0};  // side x side, 8-bit RGB
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", deflated) + chunk("IEND", "");
}

TEST(ImageDecode, APngWhoseDataIsShortIsRefusedWhenProbedNotWhenDecoded) {
  testing::TempDir dir;
  testing::write_text(dir / "short.png", png_with_short_data(10));
  const auto probed = datasets::probe_file(dir / "short.png");
  ASSERT_FALSE(probed.ok());
  EXPECT_NE(probed.status().message().find("short.png: corrupt PNG (image data holds 10 of the 200 bytes its 8 x 8 "
                                           "header declares)"),
            std::string::npos)
      << probed.status();
  // The same file with all its data is a good image: the check counts what libpng needs.
  testing::write_text(dir / "whole.png", png_with_short_data(200));
  const auto whole = datasets::probe_file(dir / "whole.png");
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_FALSE(cv::imread((dir / "whole.png").string()).empty());
  // Real encoders' files, interlaced (Adam7) and 16-bit among them, pass.
  cv::Mat image(13, 7, CV_16UC3, cv::Scalar(1000, 2000, 3000));
  ASSERT_TRUE(cv::imwrite((dir / "deep.png").string(), image));
  EXPECT_TRUE(datasets::probe_file(dir / "deep.png").ok()) << datasets::probe_file(dir / "deep.png").status();
  cv::Mat grey(5, 11, CV_8UC1, cv::Scalar(7));
  ASSERT_TRUE(cv::imwrite((dir / "grey.png").string(), grey));
  EXPECT_TRUE(datasets::probe_file(dir / "grey.png").ok());
}

// A small file declaring a huge image (a decompression bomb) is refused at its header, before
// anything is decoded or allocated.
TEST(ImageDecode, AnImageDeclaringMorePixelsThanTheLimitIsRefusedAtItsHeader) {
  testing::TempDir dir;
  testing::write_text(dir / "bomb.png", png_with_short_data(10, 30000));
  const auto probed = datasets::probe_file(dir / "bomb.png");
  ASSERT_FALSE(probed.ok());
  EXPECT_NE(probed.status().message().find("bomb.png: 30000 x 30000 pixels is more than the 178956970"),
            std::string::npos)
      << probed.status();
  EXPECT_LT(fs::file_size(dir / "bomb.png"), 200u);
}

// An ImageFolder tree with one of each bad case next to good images.
struct BadFolder {
  testing::TempDir dir;
  BadFolder() {
    auto data = SynthParts::create(small_config());
    EXPECT_TRUE(data.ok());
    EXPECT_TRUE(datasets::write_image_folder(*data, dir.path()).ok());
    const fs::path good = dir / "train/class_001/00001.jpg";
    const std::string bytes = testing::read_text(good);
    testing::write_text(dir / "train/class_001/truncated.jpg", bytes.substr(0, bytes.size() / 2));
    testing::write_text(dir / "train/class_002/notes.txt", "not an image");
    testing::write_text(dir / "train/class_002/fake.png", "definitely not a PNG file, only text here");
    testing::write_text(dir / "train/class_002/short_data.png", png_with_short_data(10));
    fs::create_directories(dir / "train/class_003");
  }
};

TEST(ImageFolder, BadSamplesAreSkippedAndListedOrFail) {
  BadFolder bad;
  const auto base = plain(bad.dir.path(), "center_crop:32");
  auto skip = build_dataset("image_folder", base);
  ASSERT_TRUE(skip);
  const auto& skipped = skip->info().skipped;
  ASSERT_EQ(skipped.size(), 5u);
  std::map<std::string, std::string> reasons;
  for (const auto& s : skipped) reasons[fs::path(s.file).filename().string()] = s.reason;
  EXPECT_NE(reasons["truncated.jpg"].find("truncated"), std::string::npos);
  EXPECT_NE(reasons["notes.txt"].find("not an image file"), std::string::npos);
  EXPECT_NE(reasons["fake.png"].find("not a JPEG or PNG"), std::string::npos);
  // Its header is good, its data is not: found at open, so no stage ever sees it.
  EXPECT_NE(reasons["short_data.png"].find("corrupt PNG (image data"), std::string::npos);
  EXPECT_NE(reasons["class_003"].find("empty class folder"), std::string::npos);
  EXPECT_EQ(skip->size("train"), 12);  // the good ones, all of them
  EXPECT_EQ(skip->info().num_classes, 4);  // the empty class keeps its index
  auto all = skip->get_batch("train", torch::arange(12, torch::kInt64));
  ASSERT_TRUE(all.ok());

  auto with_fail = base;
  with_fail["on_bad_sample"] = std::string("fail");
  const auto status = build_status("image_folder", with_fail);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(message_of(status).find("5 bad samples"), std::string::npos) << status;
  EXPECT_NE(message_of(status).find("truncated.jpg: truncated"), std::string::npos) << status;
}

TEST(ImageFolder, AFileCorruptedAfterOpeningIsLeftOutOrFails) {
  testing::TempDir dir;
  auto data = SynthParts::create(small_config());
  ASSERT_TRUE(data.ok());
  ASSERT_TRUE(datasets::write_image_folder(*data, dir.path()).ok());
  const auto base = plain(dir.path(), "center_crop:32");
  auto skip = build_dataset("image_folder", base);
  auto with_fail = base;
  with_fail["on_bad_sample"] = std::string("fail");
  auto fail = build_dataset("image_folder", with_fail);
  ASSERT_TRUE(skip && fail);
  testing::write_text(dir / "train/class_000/00000.jpg", "gone bad");
  auto batch = skip->get_batch("train", torch::arange(4, torch::kInt64));
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->images.size(0), 3);
  EXPECT_EQ(batch->labels.size(0), 3);
  auto failed = fail->get_batch("train", torch::arange(4, torch::kInt64));
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(message_of(failed.status()).find("00000.jpg"), std::string::npos) << failed.status();
}

// CUB fixture with a missing listed file, a truncated image and a keypoint outside its image.
struct BadCub {
  testing::TempDir dir;
  std::string missing, truncated, outside;
  BadCub() {
    auto data = SynthParts::create(small_config());
    EXPECT_TRUE(data.ok());
    EXPECT_TRUE(datasets::write_cub(*data, dir.path()).ok());
    std::vector<std::string> names;
    std::ifstream images(dir / "images.txt");
    for (std::string id, name; images >> id >> name;) names.push_back(name);
    missing = names[0];
    truncated = names[1];
    outside = names[2];
    fs::remove(dir / "images" / missing);
    const std::string bytes = testing::read_text(dir / "images" / truncated);
    testing::write_text(dir / "images" / truncated, bytes.substr(0, bytes.size() - 100));
    // Image id 3's first part: visible, far outside the 48x48 image.
    std::string locs = testing::read_text(dir / "parts/part_locs.txt");
    const size_t at = locs.find("\n3 1 ");
    locs.replace(at + 1, locs.find('\n', at + 1) - at - 1, "3 1 500.0 20.0 1");
    testing::write_text(dir / "parts/part_locs.txt", locs);
  }
};

TEST(Cub200, MissingTruncatedAndOutsideKeypointAreSkippedOrFail) {
  BadCub bad;
  const auto base = plain(bad.dir.path(), "center_crop:48");
  auto skip = build_dataset("cub200", base);
  ASSERT_TRUE(skip);
  ASSERT_EQ(skip->info().skipped.size(), 3u);
  std::map<std::string, std::string> reasons;
  for (const auto& s : skip->info().skipped) reasons[fs::path(s.file).filename().string()] = s.reason;
  EXPECT_EQ(reasons[fs::path(bad.missing).filename().string()], "listed in images.txt but missing");
  EXPECT_NE(reasons[fs::path(bad.truncated).filename().string()].find("truncated"), std::string::npos);
  EXPECT_NE(reasons[fs::path(bad.outside).filename().string()].find("outside the 48x48 image"), std::string::npos);
  EXPECT_EQ(skip->size("train"), 12 - 3);
  EXPECT_EQ(skip->size("test"), 6);

  auto with_fail = base;
  with_fail["on_bad_sample"] = std::string("fail");
  const auto status = build_status("cub200", with_fail);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(message_of(status).find(bad.missing + ": listed in images.txt but missing"), std::string::npos) << status;

  // A bad transform entry is named in the factory's error.
  auto bad_entry = base;
  bad_entry["eval_transform"] = std::vector<std::string>{"blur:3"};
  EXPECT_NE(message_of(build_status("cub200", bad_entry)).find("eval_transform: transform 'blur:3': unknown transform"),
            std::string::npos);

  // Malformed metadata is an error with file and line, whatever the policy.
  testing::write_text(bad.dir / "train_test_split.txt", "1 1\n2 maybe\n");
  const auto malformed = build_status("cub200", base);
  ASSERT_FALSE(malformed.ok());
  EXPECT_NE(message_of(malformed).find("train_test_split.txt:2: 'maybe' is not an integer"), std::string::npos)
      << malformed;
}

TEST(DataCli, SummaryListsSplitsAnnotationsAndEveryBadSample) {
  BadCub bad;
  const fs::path manifest = bad.dir / "cub.toml";
  testing::write_text(manifest, fmt::format(R"([experiment]
name = "cub-check"
[dataset]
type = "cub200"
root = "{}"
train_transform = ["random_resized_crop:32", "hflip"]
eval_transform = ["resize:36", "center_crop:32"]
[backbone]
type = "small_cnn"
[quantizer]
type = "vq"
[head]
type = "protoquant"
)", bad.dir.path().string()));
  const auto result = testing::run_cli("data " + manifest.string());
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const std::string& expected : std::vector<std::string>
       {"split train: 9 samples", "split test: 6 samples", "classes: 3", "images: 3 x 32 x 32", "parts: yes, 6",
        "boxes: yes", "skipped: 3 bad samples", bad.missing + ": listed in images.txt but missing",
        "outside the 48x48 image"}) {
    EXPECT_NE(result.output.find(expected), std::string::npos) << expected << "\n" << result.output;
  }
  const auto fail = testing::run_cli("data " + manifest.string() + " --set dataset.on_bad_sample=fail");
  EXPECT_EQ(fail.exit_code, 1);
  EXPECT_NE(fail.output.find("error: "), std::string::npos) << fail.output;
  EXPECT_NE(fail.output.find("listed in images.txt but missing"), std::string::npos) << fail.output;
}

TEST(DataCli, BenchLoaderReportsImagesPerSecond) {
  testing::TempDir dir;
  auto data = SynthParts::create(small_config());
  ASSERT_TRUE(data.ok());
  ASSERT_TRUE(datasets::write_image_folder(*data, dir.path()).ok());
  const auto result = testing::run_cli("bench loader --root " + dir.path().string() + " --threads 2 --size 32 --repeat 1");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("images: 18"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("images_per_s: "), std::string::npos) << result.output;
}

}  // namespace
}  // namespace protoquant
