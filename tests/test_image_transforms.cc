// Image pipeline pieces: parsing of transform entries, keypoints and boxes moving with the
// pixels under every geometric transform (checked against a marker painted at the keypoint),
// RGB normalisation, and the file probe that catches truncated and non-image files.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "datasets/image/decode.h"
#include "datasets/image/transforms.h"
#include "test_support.h"

namespace protoquant::datasets {
namespace {

// A dark, slightly textured image with a bright 3x3 marker centred on (x, y).
Sample marker_sample(int width, int height, int x, int y) {
  Sample s;
  s.image = cv::Mat(height, width, CV_8UC3, cv::Scalar(20, 30, 40));
  cv::rectangle(s.image, cv::Rect(x - 1, y - 1, 3, 3), cv::Scalar(255, 255, 255), cv::FILLED);
  s.parts = {{static_cast<float>(x), static_cast<float>(y), true}};
  return s;
}

// Where the marker is now: the centroid of the bright pixels.
cv::Point2d marker_position(const cv::Mat& image) {
  cv::Mat grey, bright;
  cv::cvtColor(image, grey, cv::COLOR_BGR2GRAY);
  cv::threshold(grey, bright, 140, 255, cv::THRESH_BINARY);
  const cv::Moments m = cv::moments(bright, true);
  if (m.m00 == 0) return {-1e9, -1e9};
  return {m.m10 / m.m00, m.m01 / m.m00};
}

void expect_keypoint_on_marker(const Sample& s, double tolerance, const std::string& what) {
  ASSERT_TRUE(s.parts[0].visible) << what;
  const auto p = marker_position(s.image);
  EXPECT_NEAR(s.parts[0].x, p.x, tolerance) << what;
  EXPECT_NEAR(s.parts[0].y, p.y, tolerance) << what;
}

TEST(ImageTransforms, KeypointFollowsMarkerThroughEachGeometricTransform) {
  {
    Sample s = marker_sample(64, 48, 10, 30);
    crop_sample(s, cv::Rect(4, 20, 30, 20));
    expect_keypoint_on_marker(s, 0.01, "crop");
    EXPECT_FLOAT_EQ(s.parts[0].x, 6.0f);
    EXPECT_FLOAT_EQ(s.parts[0].y, 10.0f);
  }
  {
    Sample s = marker_sample(64, 48, 10, 30);
    hflip_sample(s);
    expect_keypoint_on_marker(s, 0.01, "hflip");
    EXPECT_FLOAT_EQ(s.parts[0].x, 53.0f);
  }
  for (const cv::Size size : {cv::Size(128, 96), cv::Size(80, 40), cv::Size(200, 100)}) {
    Sample s = marker_sample(64, 48, 21, 17);
    resize_sample(s, size);
    expect_keypoint_on_marker(s, 0.6, fmt::format("resize to {}x{}", size.width, size.height));
  }
  {
    Sample s = marker_sample(64, 64, 40, 20);
    warp_sample(s, cv::Matx23d(1, 0, 7, 0, 1, -5));
    expect_keypoint_on_marker(s, 0.01, "translate");
    EXPECT_FLOAT_EQ(s.parts[0].x, 47.0f);
  }
  {
    Sample s = marker_sample(64, 64, 40, 20);
    const cv::Mat m = cv::getRotationMatrix2D(cv::Point2f(31.5f, 31.5f), 90.0, 1.0);
    warp_sample(s, cv::Matx23d(m));
    expect_keypoint_on_marker(s, 0.01, "rotate 90");
  }
  {
    Sample s = marker_sample(64, 64, 20, 30);
    warp_sample(s, cv::Matx23d(1, 0.5, 0, 0, 1, 0));
    expect_keypoint_on_marker(s, 0.7, "shear");
  }
  {
    // Leaves the image: marked not visible.
    Sample s = marker_sample(64, 64, 60, 30);
    warp_sample(s, cv::Matx23d(1, 0, 10, 0, 1, 0));
    EXPECT_FALSE(s.parts[0].visible);
    Sample c = marker_sample(64, 64, 60, 30);
    crop_sample(c, cv::Rect(0, 0, 32, 32));
    EXPECT_FALSE(c.parts[0].visible);
  }
}

TEST(ImageTransforms, RandomPipelinesKeepKeypointsOnTheMarker) {
  auto pipeline = Pipeline::parse({"random_resized_crop:48:0.3", "hflip"}, "train_transform");
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  int checked = 0;
  for (uint64_t seed = 0; seed < 60; ++seed) {
    const Sample original = marker_sample(96, 80, 47, 33);
    Sample s = original;
    Rng rng(seed);
    ASSERT_TRUE(pipeline->run(original.image.size(), 1, [&](int) -> absl::StatusOr<cv::Mat> { return original.image.clone(); },
                              std::nullopt, s, rng)
                    .ok());
    ASSERT_EQ(s.image.rows, 48);
    ASSERT_EQ(s.image.cols, 48);
    // Wherever the whole marker survives the crop, the keypoint must be visible and on it.
    const auto p = marker_position(s.image);
    if (p.x < 2 || p.y < 2 || p.x > 45 || p.y > 45) continue;  // cropped away or cut by the edge
    EXPECT_TRUE(s.parts[0].visible) << "seed " << seed;
    EXPECT_NEAR(s.parts[0].x, p.x, 1.0) << "seed " << seed;
    EXPECT_NEAR(s.parts[0].y, p.y, 1.0) << "seed " << seed;
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

TEST(ImageTransforms, ReducedJpegDecodeKeepsKeypointsOnTheMarker) {
  // A 512x384 JPEG with the marker: random_resized_crop to 32 lets the decoder scale by 8, 4 or 2.
  testing::TempDir dir;
  Sample big;
  big.image = cv::Mat(384, 512, CV_8UC3, cv::Scalar(20, 30, 40));
  cv::rectangle(big.image, cv::Rect(300 - 12, 200 - 12, 25, 25), cv::Scalar(255, 255, 255), cv::FILLED);
  ASSERT_TRUE(write_image(dir / "big.jpg", big.image, 95).ok());
  auto bytes = read_bytes(dir / "big.jpg");
  ASSERT_TRUE(bytes.ok());
  auto pipeline = Pipeline::parse({"random_resized_crop:32:0.5"}, "train_transform");
  ASSERT_TRUE(pipeline.ok());
  std::set<int> reductions;
  int checked = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Sample s;
    s.parts = {{300.0f, 200.0f, true}};
    Rng rng(seed);
    ASSERT_TRUE(pipeline
                    ->run(big.image.size(), 8,
                          [&](int r) {
                            reductions.insert(r);
                            return decode_bgr(*bytes, ImageFormat::kJpeg, r);
                          },
                          std::nullopt, s, rng)
                    .ok());
    const auto p = marker_position(s.image);
    if (p.x < 3 || p.y < 3 || p.x > 28 || p.y > 28) continue;  // cropped away or cut by the edge
    ++checked;
    EXPECT_TRUE(s.parts[0].visible) << "seed " << seed;
    EXPECT_NEAR(s.parts[0].x, p.x, 1.0) << "seed " << seed;
    EXPECT_NEAR(s.parts[0].y, p.y, 1.0) << "seed " << seed;
  }
  EXPECT_GT(checked, 5);
  EXPECT_GT(*reductions.rbegin(), 1) << "the decoder was never asked for a reduced image";
}

TEST(ImageTransforms, BoxFollowsFlipCropAndResize) {
  Sample s;
  s.image = cv::Mat(40, 64, CV_8UC3, cv::Scalar::all(0));
  s.box = cv::Rect2f(10, 5, 20, 10);
  hflip_sample(s);
  EXPECT_FLOAT_EQ(s.box->x, 34.0f);
  EXPECT_FLOAT_EQ(s.box->width, 20.0f);
  crop_sample(s, cv::Rect(30, 0, 34, 40));
  EXPECT_FLOAT_EQ(s.box->x, 4.0f);
  resize_sample(s, cv::Size(68, 80));
  EXPECT_FLOAT_EQ(s.box->x, 8.0f);
  EXPECT_FLOAT_EQ(s.box->y, 10.0f);
  EXPECT_FLOAT_EQ(s.box->width, 40.0f);
  EXPECT_FLOAT_EQ(s.box->height, 20.0f);
}

TEST(ImageTransforms, EntriesParseOrFailNamingTheEntry) {
  auto ok = Pipeline::parse({"resize:256", "center_crop:224", "hflip:0.3", "trivial_augment", "random_erasing:0.25"},
                            "eval_transform");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->height(), 224);
  EXPECT_EQ(ok->width(), 224);
  auto rect = Pipeline::parse({"random_resized_crop:192x160"}, "train_transform");
  ASSERT_TRUE(rect.ok());
  EXPECT_EQ(rect->height(), 192);
  EXPECT_EQ(rect->width(), 160);

  auto bad = Pipeline::parse({"random_resized_crop:abc", "hflip:2", "blur:3", "center_crop:224"}, "train_transform");
  ASSERT_FALSE(bad.ok());
  const std::string message(bad.status().message());
  EXPECT_NE(message.find("train_transform: transform 'random_resized_crop:abc': bad size 'abc'"), std::string::npos) << message;
  EXPECT_NE(message.find("'hflip:2'"), std::string::npos) << message;
  EXPECT_NE(message.find("'blur:3': unknown transform"), std::string::npos) << message;

  auto open_size = Pipeline::parse({"resize:256", "hflip"}, "eval_transform");
  ASSERT_FALSE(open_size.ok());
  EXPECT_NE(std::string(open_size.status().message()).find("fixed size"), std::string::npos);
  // A fixed-size source needs no sizing transform.
  EXPECT_TRUE(Pipeline::parse({"hflip"}, "train_transform", cv::Size(64, 64)).ok());
}

TEST(ImageTransforms, NormalisesToRgbPlanes) {
  cv::Mat image(2, 3, CV_8UC3, cv::Scalar(10, 20, 30));  // B, G, R
  image.at<cv::Vec3b>(1, 2) = cv::Vec3b(255, 0, 128);
  const double mean[3] = {0.5, 0.25, 0.125}, std[3] = {0.5, 0.25, 2.0};
  std::vector<float> out(3 * 6);
  to_normalized_chw(image, mean, std, out.data());
  EXPECT_NEAR(out[0], (30 / 255.0 - 0.5) / 0.5, 1e-6);                // R plane, pixel (0, 0)
  EXPECT_NEAR(out[6], (20 / 255.0 - 0.25) / 0.25, 1e-6);              // G plane
  EXPECT_NEAR(out[12], (10 / 255.0 - 0.125) / 2.0, 1e-6);             // B plane
  EXPECT_NEAR(out[5], (128 / 255.0 - 0.5) / 0.5, 1e-6);               // R of pixel (1, 2)
  EXPECT_NEAR(out[12 + 5], (255 / 255.0 - 0.125) / 2.0, 1e-6);        // B of pixel (1, 2)
}

TEST(ImageDecode, ProbeCatchesTruncatedCorruptAndNonImageFiles) {
  testing::TempDir dir;
  cv::Mat image(40, 50, CV_8UC3, cv::Scalar(0, 128, 255));
  cv::randu(image, cv::Scalar::all(0), cv::Scalar::all(255));
  ASSERT_TRUE(write_image(dir / "a.jpg", image, 90).ok());
  ASSERT_TRUE(write_image(dir / "a.png", image).ok());
  auto jpeg = probe_file(dir / "a.jpg");
  ASSERT_TRUE(jpeg.ok()) << jpeg.status();
  EXPECT_EQ(jpeg->width, 50);
  EXPECT_EQ(jpeg->height, 40);
  auto png = probe_file(dir / "a.png");
  ASSERT_TRUE(png.ok()) << png.status();
  EXPECT_EQ(png->format, ImageFormat::kPng);
  EXPECT_EQ(png->height, 40);

  const std::string full = testing::read_text(dir / "a.jpg");
  testing::write_text(dir / "cut.jpg", full.substr(0, full.size() / 2));
  auto cut = probe_file(dir / "cut.jpg");
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(std::string(cut.status().message()).find("cut.jpg: truncated"), std::string::npos) << cut.status();
  const std::string full_png = testing::read_text(dir / "a.png");
  testing::write_text(dir / "cut.png", full_png.substr(0, full_png.size() - 20));
  EXPECT_FALSE(probe_file(dir / "cut.png").ok());
  testing::write_text(dir / "text.jpg", "this is not an image, just some text pretending to be one");
  auto text = probe_file(dir / "text.jpg");
  ASSERT_FALSE(text.ok());
  EXPECT_NE(std::string(text.status().message()).find("not a JPEG or PNG"), std::string::npos);
  EXPECT_EQ(probe_file(dir / "absent.jpg").status().code(), absl::StatusCode::kNotFound);

  // Grey JPEG, grey 16-bit PNG: decoded to 3 equal 8-bit channels.
  cv::Mat grey(30, 20, CV_8UC1, cv::Scalar(77)), grey16(30, 20, CV_16UC1, cv::Scalar(77 * 257));
  ASSERT_TRUE(cv::imwrite((dir / "grey.jpg").string(), grey));
  ASSERT_TRUE(cv::imwrite((dir / "grey16.png").string(), grey16));
  for (const auto& [name, format] : {std::pair<std::string, ImageFormat>{"grey.jpg", ImageFormat::kJpeg},
                                     std::pair<std::string, ImageFormat>{"grey16.png", ImageFormat::kPng}}) {
    auto decoded = decode_bgr(*read_bytes(dir / name), format, 1);
    ASSERT_TRUE(decoded.ok()) << name;
    EXPECT_EQ(decoded->type(), CV_8UC3) << name;
    EXPECT_NEAR(cv::mean(*decoded)[2], 77.0, 1.0) << name;
  }

  auto bytes = read_bytes(dir / "a.jpg");
  ASSERT_TRUE(bytes.ok());
  auto half = decode_bgr(*bytes, ImageFormat::kJpeg, 2);
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->cols, 25);
  EXPECT_EQ(half->rows, 20);
}

}  // namespace
}  // namespace protoquant::datasets
