#include <gtest/gtest.h>

#include "protoquant/params.h"

namespace protoquant {
namespace {

TEST(ParamSpec, ChecksTypeRangeAndChoices) {
  const auto codes = ParamSpec::Int("codes", 256, "K").range(1, 1024);
  EXPECT_EQ(codes.check(ParamValue(int64_t{16})), "");
  EXPECT_NE(codes.check(ParamValue(int64_t{0})).find("below the minimum 1"), std::string::npos);
  EXPECT_NE(codes.check(ParamValue(int64_t{2048})).find("above the maximum 1024"), std::string::npos);
  EXPECT_NE(codes.check(ParamValue(std::string("many"))).find("must be int"), std::string::npos);

  const auto metric = ParamSpec::String("metric", "cosine", "rule").one_of({"cosine", "euclidean"});
  EXPECT_EQ(metric.check(ParamValue(std::string("euclidean"))), "");
  const std::string error = metric.check(ParamValue(std::string("cosin")));
  EXPECT_NE(error.find("did you mean \"cosine\""), std::string::npos) << error;

  const auto widths = ParamSpec::IntList("widths", {1, 2}, "w").min(1);
  EXPECT_EQ(widths.check(ParamValue(std::vector<int64_t>{3, 4})), "");
  EXPECT_NE(widths.check(ParamValue(std::vector<int64_t>{3, 0})), "");
}

TEST(ParamSchema, DefaultsAndTypedGetters) {
  ParamSchema schema{ParamSpec::Int("k", 4, ""), ParamSpec::Float("tau", 0.1, ""),
                     ParamSpec::Required("root", ParamType::kString, "")};
  Params params = Params::defaults(schema);
  EXPECT_EQ(params.get_int("k"), 4);
  EXPECT_DOUBLE_EQ(params.get_float("tau"), 0.1);
  EXPECT_FALSE(params.has("root"));
  EXPECT_THROW(params.get_string("root"), std::out_of_range);
  EXPECT_THROW(params.get_string("k"), std::invalid_argument);
  params.set("k", int64_t{7});
  EXPECT_DOUBLE_EQ(params.get_float("k"), 7.0);  // ints widen to floats
  EXPECT_EQ(params.to_json()["k"], 7);
  EXPECT_THROW(schema.add(ParamSpec::Int("k", 1, "")), std::logic_error);
}

TEST(ClosestMatch, SuggestsOnlySmallTypos) {
  EXPECT_EQ(closest_match("cods", {"codes", "metric", "init"}), "codes");
  EXPECT_EQ(closest_match("temprature", {"temperature", "sparsity"}), "temperature");
  EXPECT_EQ(closest_match("zzzzzz", {"codes", "metric"}), "");
}

}  // namespace
}  // namespace protoquant
