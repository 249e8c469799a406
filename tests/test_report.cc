// The run report (core/src/report/report.h) and what it is drawn from: a quickstart-sized synthparts run
// writes report.html with every section, only embedded images that decode, text of at least 12 px,
// the explanations of the first test images of each class, accuracy against k equal to the
// unedited model's at k = P, and purity per prototype agreeing with the purity metric; headless
// Chromium renders it, and finds no broken image. `protoquant report` rewrites it and refuses
// bad input with one line and no page. `protoquant explain --image` reads any file the way the
// test images are read. The SVG charts and limit-k editing are checked against hand counts.
#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <regex>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/src/report/pictures.h"
#include "core/src/report/report.h"
#include "core/src/run/run_records.h"
#include "core/src/report/svg_chart.h"
#include "protoquant/edit.h"
#include "protoquant/manifest.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const kSections[] = {"metrics", "stages", "curves", "usage", "limit-k", "gallery", "explanations", "manifest"};

// Base64 decoded here, independently of the report's encoder.
std::vector<uchar> decode_base64(const std::string& text) {
  static const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::vector<uchar> out;
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    if (c == '=') break;
    const size_t v = alphabet.find(c);
    if (v == std::string::npos) return {};
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uchar>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

using testing::results_of;

// One run shared by the tests of this file: 4 classes, two explanations per class, purity on.
class RunReport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const fs::path manifest = testing::tiny_manifest(*dir_, "synthparts.toml", "reported");
    testing::write_text(manifest, testing::read_text(manifest) + R"(
[[metrics]]
type = "purity"
patch_size = 8
top_k = 5

[report]
explanations_per_class = 2
gallery_prototypes = 12
patches = 3
)");
    // Two head epochs: a curve of two points.
    const auto trained = testing::run_cli("run " + manifest.string() + " --out " + (*dir_ / "run").string() +
                                          " --set stages.head.epochs=2");
    ASSERT_EQ(trained.exit_code, 0) << trained.output;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static fs::path run() { return *dir_ / "run"; }
  static testing::TempDir* dir_;
};
testing::TempDir* RunReport::dir_ = nullptr;

// The <img> tags, found without std::regex (whose recursion overflows on megabyte data URIs).
struct Img {
  std::string src;
  int width = -1, height = -1;
};
std::string attribute(const std::string& tag, const std::string& name) {
  const size_t at = tag.find(" " + name + "=\"");
  if (at == std::string::npos) return "";
  const size_t begin = at + name.size() + 3;
  return tag.substr(begin, tag.find('"', begin) - begin);
}
std::vector<Img> img_tags(const std::string& html) {
  std::vector<Img> out;
  for (size_t at = html.find("<img "); at != std::string::npos; at = html.find("<img ", at + 1)) {
    const std::string tag = html.substr(at, html.find('>', at) - at);
    Img img;
    img.src = attribute(tag, "src");
    const std::string width = attribute(tag, "width"), height = attribute(tag, "height");
    img.width = width.empty() ? -1 : std::stoi(width);
    img.height = height.empty() ? -1 : std::stoi(height);
    out.push_back(img);
  }
  return out;
}
// The page with every data URI cut short, for regular expressions over its text.
std::string without_images(const std::string& html) {
  std::string out;
  size_t from = 0;
  for (size_t at = html.find("data:image/png;base64,"); at != std::string::npos;
       at = html.find("data:image/png;base64,", from)) {
    out += html.substr(from, at - from) + "data:";
    from = html.find('"', at);
  }
  return out + html.substr(from);
}

// The matches point into `text`: keep it alive while they are read.
std::vector<std::smatch> all_matches(const std::string& text, const std::regex& pattern) {
  std::vector<std::smatch> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), pattern); it != std::sregex_iterator(); ++it) out.push_back(*it);
  return out;
}

TEST_F(RunReport, HoldsEverySectionWithEmbeddedImagesThatDecode) {
  ASSERT_TRUE(fs::exists(run() / "report.html"));
  const std::string html = testing::read_text(run() / "report.html");
  for (const char* id : kSections) {
    EXPECT_NE(html.find(fmt::format("<section id=\"{}\">", id)), std::string::npos) << id;
  }
  // Self-contained: no script, no stylesheet, image or link target anywhere else (the SVG
  // namespace is a name, not an address).
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  for (const char* reference : {"src=\"http", "href=\"http", "url(", "src=\"file", "src=\"/"}) {
    EXPECT_EQ(html.find(reference), std::string::npos) << reference;
  }
  const std::vector<Img> images = img_tags(html);
  ASSERT_EQ(images.size(), 1U + 4 * 2) << "the gallery and two explanations per class";
  for (const Img& img : images) {
    ASSERT_EQ(img.src.rfind("data:image/png;base64,", 0), 0U) << img.src.substr(0, 60);
    const cv::Mat image = cv::imdecode(decode_base64(img.src.substr(22)), cv::IMREAD_COLOR);
    ASSERT_FALSE(image.empty()) << "an embedded image that does not decode";
    EXPECT_EQ(image.cols, img.width);
    EXPECT_EQ(image.rows, img.height);
  }
  // The gallery shows the 12 most used prototypes, one 96-px row each (plus margins).
  const cv::Mat gallery = cv::imdecode(decode_base64(images[0].src.substr(22)), cv::IMREAD_COLOR);
  EXPECT_EQ(gallery.rows, 6 + 12 * (96 + 6));
  // Text is never below 12 px: every font size of the page and its charts.
  const std::string text = without_images(html);
  for (const auto& m : all_matches(text, std::regex("font-size[:=] ?\"?([0-9]+)"))) {
    EXPECT_GE(std::stoi(m[1].str()), 12) << m[0].str();
  }
  // Charts: the loss of every trained stage, validation accuracy where validated (codebook keeps
  // its best epoch, the head validates each epoch), the usage histogram, accuracy against k.
  EXPECT_EQ(all_matches(text, std::regex("<svg ")).size(), 3U + 2 + 1 + 1);
  // The resolved manifest, escaped.
  EXPECT_NE(html.find("[report]"), std::string::npos);
  EXPECT_NE(html.find("explanations_per_class = 2"), std::string::npos);
}

TEST_F(RunReport, ExplainsTheFirstTestImagesOfEachClass) {
  // Which images those are, from the dataset's own labels.
  Registry& registry = testing::builtin_registry();
  auto spec = load_experiment(run() / "manifest.toml", {}, registry);
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto dataset = registry.datasets.build(spec->dataset.type, spec->dataset.params, {});
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const int64_t n = (*dataset)->size("test");
  auto batch = (*dataset)->get_eval_batch("test", torch::arange(n, torch::kInt64));
  ASSERT_TRUE(batch.ok()) << batch.status();
  std::map<int64_t, std::vector<int64_t>> first;
  for (int64_t i = 0; i < n; ++i) {
    auto& list = first[batch->labels[i].item<int64_t>()];
    if (list.size() < 2) list.push_back(i);
  }
  ASSERT_EQ(first.size(), 4U);
  std::set<std::string> expected, written;
  for (const auto& [label, indices] : first) {
    for (int64_t i : indices) expected.insert(fmt::format("test-{}.png", i));
  }
  for (const auto& entry : fs::directory_iterator(run() / "explanations")) written.insert(entry.path().filename().string());
  EXPECT_EQ(written, expected);
  for (const auto& name : expected) EXPECT_FALSE(cv::imread((run() / "explanations" / name).string()).empty()) << name;
}

TEST_F(RunReport, AccuracyAgainstKEndsAtTheUneditedModel) {
  const json results = results_of(run());
  const std::string html = testing::read_text(run() / "report.html");
  const std::string page = without_images(html);  // the matches below point into it
  const auto rows = all_matches(page, std::regex("<tr><td class=\"number\">([0-9]+)</td><td class=\"number\">([0-9.]+)</td></tr>"));
  const int64_t prototypes = static_cast<int64_t>(results["codebook_counts"].size());
  ASSERT_GT(prototypes, 0);
  const std::vector<int64_t> ks = limit_k_values(prototypes);
  ASSERT_EQ(rows.size(), ks.size());
  for (size_t i = 0; i < ks.size(); ++i) EXPECT_EQ(std::stoll(rows[i][1].str()), ks[i]);
  EXPECT_NEAR(std::stod(rows.back()[2].str()), results["metrics"]["accuracy"]["accuracy"].get<double>(), 5e-5);
  // The edit was undone: the exported model is the trained one, and a second report agrees.
  const auto again = testing::run_cli("report " + run().string());
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const std::string page_again = without_images(testing::read_text(run() / "report.html"));
  const auto rows_again = all_matches(page_again,
                                      std::regex("<tr><td class=\"number\">([0-9]+)</td><td class=\"number\">([0-9.]+)</td></tr>"));
  ASSERT_EQ(rows_again.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows_again[i][2].str(), rows[i][2].str());
}

TEST_F(RunReport, TrainingCurvesAndPurityPerPrototypeComeFromTheRecords) {
  const json head = json::parse(testing::read_text(run() / "stages" / "head.json"));
  EXPECT_EQ(head["epoch_losses"].size(), 2U);
  EXPECT_EQ(head["validation"].size(), 2U);
  const json blackbox = json::parse(testing::read_text(run() / "stages" / "blackbox.json"));
  EXPECT_EQ(blackbox["epoch_losses"].size(), 1U);
  EXPECT_TRUE(blackbox["validation"].empty()) << "stage 0 decodes images: no validation unless asked";
  // Purity per prototype: its mean over the evaluated prototypes is the metric's value.
  const json results = results_of(run());
  const int64_t prototypes = static_cast<int64_t>(results["codebook_counts"].size());
  const std::vector<double> purity = recorded_purity(run(), prototypes);
  ASSERT_EQ(static_cast<int64_t>(purity.size()), prototypes);
  double sum = 0;
  int64_t count = 0;
  for (double p : purity) {
    if (std::isnan(p)) continue;
    EXPECT_GE(p, 0.0);
    EXPECT_LE(p, 1.0);
    sum += p;
    ++count;
  }
  EXPECT_EQ(count, results["metrics"]["purity"]["evaluated_prototypes"].get<int64_t>());
  EXPECT_NEAR(sum / static_cast<double>(count), results["metrics"]["purity"]["purity"].get<double>(), 1e-9);
  const torch::Tensor usage = recorded_usage(results, prototypes);
  ASSERT_TRUE(usage.defined());
  EXPECT_EQ(usage.sum().item<int64_t>(), results["metrics"]["codebook"]["assignments"].get<int64_t>());
}

TEST_F(RunReport, RendersInHeadlessChromiumWithoutABrokenImage) {
  ASSERT_FALSE(testing::chromium().empty())
      << "chromium is not installed: tools/install-deps.sh installs it (the run report is checked in a browser)";
  testing::TempDir dir;
  const fs::path page = run() / "report.html";
  const fs::path shot = dir / "shot.png";
  ASSERT_EQ(testing::run_chromium(dir, fmt::format("--screenshot={} --window-size=1300,2400 'file://{}'", shot.string(),
                                                   page.string()),
                                  dir / "stdout.txt"),
            0)
      << testing::read_text(dir / "chromium.log");
  const cv::Mat image = cv::imread(shot.string(), cv::IMREAD_COLOR);
  ASSERT_FALSE(image.empty()) << "no screenshot: " << testing::read_text(dir / "chromium.log");
  EXPECT_EQ(image.cols, 1300);
  EXPECT_EQ(image.rows, 2400);
  cv::Mat grey;
  cv::cvtColor(image, grey, cv::COLOR_BGR2GRAY);
  cv::Scalar mean, deviation;
  cv::meanStdDev(grey, mean, deviation);
  EXPECT_GT(deviation[0], 10.0) << "a nearly uniform picture";
  EXPECT_GT(cv::countNonZero(grey < 100), 5000) << "too little text drawn";
  // Colour: the charts' lines and the gallery's patches, not only black text on white.
  cv::Mat hsv;
  cv::cvtColor(image, hsv, cv::COLOR_BGR2HSV);
  std::vector<cv::Mat> channels;
  cv::split(hsv, channels);
  EXPECT_GT(cv::countNonZero(channels[1] > 80), 5000) << "no coloured pixels: charts or pictures missing";

  // Broken images: a copy of the page with a probe that counts every <img> the browser could not
  // decode, and the sections it laid out (the report itself has no script).
  std::string html = testing::read_text(page);
  const std::string probe = R"(<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).length;
  const sections = [...document.querySelectorAll('section')].filter(s => s.offsetHeight > 0).map(s => s.id);
  document.body.setAttribute('data-probe', `images=${images.length} broken=${broken} sections=${sections.join(',')}`);
});
</script></body>)";
  html.replace(html.rfind("</body>"), 7, probe);
  testing::write_text(dir / "probed.html", html);
  const fs::path dom = dir / "dom.html";
  ASSERT_EQ(testing::run_chromium(dir, fmt::format("--virtual-time-budget=5000 --dump-dom 'file://{}'", (dir / "probed.html").string()),
                                  dom),
            0)
      << testing::read_text(dir / "chromium.log");
  const std::string dumped = testing::read_text(dom);
  std::smatch probe_result;
  ASSERT_TRUE(std::regex_search(dumped, probe_result, std::regex("data-probe=\"([^\"]*)\""))) << dumped.substr(0, 400);
  EXPECT_EQ(probe_result[1].str(), "images=9 broken=0 sections=metrics,stages,curves,usage,limit-k,gallery,explanations,manifest");
}

TEST_F(RunReport, ReportCommandRewritesThePageAndRefusesBadInput) {
  testing::TempDir dir;
  // A copy, so the other tests keep their run.
  fs::copy(run(), dir / "copy", fs::copy_options::recursive);
  const fs::path copy = dir / "copy";
  const auto bare = testing::run_cli("report " + copy.string() + " --explanations-per-class 0 --gallery-prototypes 0");
  ASSERT_EQ(bare.exit_code, 0) << bare.output;
  const std::string html = testing::read_text(copy / "report.html");
  EXPECT_EQ(html.find("<img "), std::string::npos);
  for (const char* id : kSections) EXPECT_NE(html.find(fmt::format("<section id=\"{}\">", id)), std::string::npos) << id;
  EXPECT_NE(html.find("gallery_prototypes = 0"), std::string::npos) << "the empty section says why";

  const auto missing = testing::run_cli("report " + (dir / "nowhere").string());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("nowhere: not a run folder"), std::string::npos) << missing.output;

  // A run without a head: one line, and no page.
  fs::remove(copy / "stages" / "head.json");
  fs::remove(copy / "report.html");
  const auto headless = testing::run_cli("report " + copy.string());
  EXPECT_NE(headless.exit_code, 0);
  EXPECT_NE(headless.output.find("no finished 'head' stage"), std::string::npos) << headless.output;
  EXPECT_FALSE(fs::exists(copy / "report.html"));
}

TEST_F(RunReport, ExplainsAnImageFileAsItsTestImage) {
  // Test image 5 written as a PNG: the eval transform is the identity here, so the file is the
  // same sample up to 8-bit rounding, and the explanation names the same class and prototypes.
  Registry& registry = testing::builtin_registry();
  auto spec = load_experiment(run() / "manifest.toml", {}, registry);
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto dataset = registry.datasets.build(spec->dataset.type, spec->dataset.params, {});
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  auto batch = (*dataset)->get_eval_batch("test", torch::tensor({5}, torch::kInt64));
  ASSERT_TRUE(batch.ok()) << batch.status();
  testing::TempDir dir;
  const fs::path file = dir / "five.png";
  const torch::Tensor before = batch->images.clone();
  ASSERT_TRUE(cv::imwrite(file.string(), displayable(batch->images[0], (*dataset)->info())));
  EXPECT_TRUE(torch::equal(batch->images, before)) << "drawing an image must not change it";
  auto loaded = (*dataset)->load_image(file);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->images.sizes(), batch->images.sizes());
  const double smallest_std = *std::min_element((*dataset)->info().std.begin(), (*dataset)->info().std.end());
  EXPECT_LE((loaded->images - batch->images).abs().max().item<double>(), 0.5 / 255 / smallest_std + 1e-4);

  const auto from_file = testing::run_cli("explain " + run().string() + " --image " + file.string() + " --top 2 --out " +
                                          (dir / "file.png").string());
  ASSERT_EQ(from_file.exit_code, 0) << from_file.output;
  const auto from_index = testing::run_cli("explain " + run().string() + " --test-index 5 --top 2 --out " +
                                           (dir / "index.png").string());
  ASSERT_EQ(from_index.exit_code, 0) << from_index.output;
  auto prediction = [](const std::string& output) {
    std::smatch m;
    std::regex_search(output, m, std::regex("predicted ([0-9]+); class [0-9]+ score"));
    return m.size() > 1 ? m[1].str() : std::string("?");
  };
  auto prototypes = [](const std::string& output) {
    std::vector<std::string> ids;
    for (const auto& m : all_matches(output, std::regex("prototype +([0-9]+):"))) ids.push_back(m[1].str());
    return ids;
  };
  EXPECT_EQ(prediction(from_file.output), prediction(from_index.output)) << from_file.output << from_index.output;
  EXPECT_EQ(prototypes(from_file.output), prototypes(from_index.output)) << from_file.output << from_index.output;
  EXPECT_NE(from_file.output.find("five.png: label -1"), std::string::npos) << from_file.output;
  EXPECT_FALSE(cv::imread((dir / "file.png").string()).empty());

  // Bad input: one line naming the problem, a non-zero exit, and no picture.
  const auto gone = testing::run_cli("explain " + run().string() + " --image " + (dir / "gone.png").string() + " --out " +
                                     (dir / "gone-out.png").string());
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_NE(gone.output.find("gone.png: no such image file"), std::string::npos) << gone.output;
  EXPECT_FALSE(fs::exists(dir / "gone-out.png"));
  testing::write_text(dir / "text.png", "not a picture at all");
  const auto text = testing::run_cli("explain " + run().string() + " --image " + (dir / "text.png").string() + " --out " +
                                     (dir / "text-out.png").string());
  EXPECT_NE(text.exit_code, 0);
  EXPECT_NE(text.output.find("text.png"), std::string::npos) << text.output;
  EXPECT_FALSE(fs::exists(dir / "text-out.png"));
  const auto both = testing::run_cli("explain " + run().string() + " --image " + file.string() + " --test-index 0");
  EXPECT_NE(both.exit_code, 0);
  EXPECT_NE(both.output.find("give one of --test-index I, --image FILE or --gallery"), std::string::npos) << both.output;
}

TEST(SvgChart, OnePointPerFiniteValueAndNothingWithoutData) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::string chart = svg_line_chart({{"loss <a>", {1, 2, 3, 4}, {0.5, nan, 0.25, 0.125}}}, {"t", "epoch", "loss"});
  EXPECT_EQ(all_matches(chart, std::regex("<circle ")).size(), 3U);
  EXPECT_NE(chart.find("loss &lt;a&gt;"), std::string::npos) << "names are escaped";
  // The largest value is drawn highest (smallest y), the smallest lowest.
  const auto points = all_matches(chart, std::regex("<circle cx=\"([0-9.]+)\" cy=\"([0-9.]+)\""));
  ASSERT_EQ(points.size(), 3U);
  EXPECT_LT(std::stod(points[0][2].str()), std::stod(points[1][2].str()));
  EXPECT_LT(std::stod(points[1][2].str()), std::stod(points[2][2].str()));
  EXPECT_LT(std::stod(points[0][1].str()), std::stod(points[2][1].str()));
  EXPECT_TRUE(svg_line_chart({{"", {1, 2}, {nan, nan}}}, {"t", "x", "y"}).empty());
  EXPECT_TRUE(svg_bar_chart({}, {"t", "x", "y"}).empty());
  const std::string bars = svg_bar_chart({3, 0, 1}, {"t", "x", "y"});
  const auto heights = all_matches(bars, std::regex("height=\"([0-9.]+)\" fill=\"#1f77b4\""));
  ASSERT_EQ(heights.size(), 3U);  // one bar per value, the zero one flat
  EXPECT_NEAR(std::stod(heights[0][1].str()), 3 * std::stod(heights[2][1].str()), 0.2);
  EXPECT_EQ(std::stod(heights[1][1].str()), 0.0);
  EXPECT_EQ(escape_html("a&b\"<>"), "a&amp;b&quot;&lt;&gt;");
}

TEST(LimitK, KeepsEachClassesKStrongestWeightsWithTiesToTheLowerIndex) {
  EXPECT_EQ(limit_k_values(128), (std::vector<int64_t>{1, 2, 3, 5, 10, 20, 50, 100, 128}));
  EXPECT_EQ(limit_k_values(3), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(limit_k_values(1), (std::vector<int64_t>{1}));
  torch::manual_seed(3);
  const torch::Tensor weights = torch::rand({5, 12}).mul(4).round();  // many ties
  for (int64_t k : {1, 3, 7, 12, 20}) {
    const torch::Tensor kept = limit_k_weights(weights, k);
    for (int64_t c = 0; c < 5; ++c) {
      // By hand: the indices of the k largest, lower index first among equals.
      std::vector<int64_t> order(12);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return weights[c][a].item<float>() > weights[c][b].item<float>(); });
      for (int64_t j = 0; j < 12; ++j) {
        const bool keep = std::find(order.begin(), order.begin() + std::min<int64_t>(k, 12), j) != order.begin() + std::min<int64_t>(k, 12);
        EXPECT_EQ(kept[c][j].item<float>(), keep ? weights[c][j].item<float>() : 0.0F) << "class " << c << " p " << j << " k " << k;
      }
    }
  }
}

}  // namespace
}  // namespace protoquant
