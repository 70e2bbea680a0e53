// make_limiter: the one place that picks a Limiter from Options::url.
#include "ratelimit/limiter.h"
#include "ratelimit/local_limiter.h"
#include "ratelimit/redis_limiter.h"

namespace llmpool::ratelimit {

Result<std::unique_ptr<Limiter>> make_limiter(const Options& options) {
  if (options.url.empty() || options.url == "local") return std::unique_ptr<Limiter>(std::make_unique<LocalLimiter>());
  ASSIGN_OR_RETURN(std::unique_ptr<RedisLimiter> redis, RedisLimiter::create(options));
  return std::unique_ptr<Limiter>(std::move(redis));
}

}  // namespace llmpool::ratelimit
