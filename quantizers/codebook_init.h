// Codebook initialisation shared by the quantizers: data-free (orthogonal, uniform, normal) and
// data-dependent (k-means: k-means++ seeding, then Lloyd iterations, all as GEMMs).
#pragma once

#include <string>

#include <torch/torch.h>

#include "protoquant/collectives.h"

namespace protoquant::quantizers {

// A K x D codebook from a data-free init ("orthogonal", "uniform", "normal"); "kmeans" returns
// an orthogonal placeholder to be replaced by kmeans() once data is seen.
torch::Tensor initial_codebook(const std::string& init, int64_t codes, int64_t dim);

// k-means on the rows of `data` (N x D): k-means++ seeding and `iterations` Lloyd steps under the
// squared euclidean distance, or on the unit sphere (spherical k-means) when `cosine`. Every
// random draw comes from `seed`. Empty clusters are re-seeded from the points farthest from
// their code. The assignment step takes rows in blocks of at most `block_bytes` of distances, so
// memory stays bounded whatever the number of codes.
//
// Collective: every rank of `group` passes the same data and seed, computes distances for its
// contiguous share of the rows only, and the ranks sum what the steps need (each seed's sampling
// mass, each Lloyd step's sums and counts), so all return the same centres, and the centres one
// process computes alone, up to the order of float sums.
torch::Tensor kmeans(const torch::Tensor& data, int64_t codes, int64_t iterations, bool cosine, uint64_t seed,
                     int64_t block_bytes = int64_t{64} << 20, Collectives& group = collectives());

// A codebook from k-means on real feature vectors, seeded from torch's global generator (rank
// 0's draw: collective, like kmeans()). Under the cosine metric the spherical centres are scaled
// to the data's mean norm, so substituted codewords feed the frozen head g vectors of the right
// magnitude.
torch::Tensor kmeans_codebook(const torch::Tensor& data, int64_t codes, int64_t iterations, bool cosine);

}  // namespace protoquant::quantizers
