#include "err.h"

static const char *const err_msgs[] = {
#define ERR_MSG(name, msg) msg,
  ERR_TABLE(ERR_MSG)
#undef ERR_MSG
};

static const char *const err_names[] = {
#define ERR_NAME(name, msg) #name,
  ERR_TABLE(ERR_NAME)
#undef ERR_NAME
};

const char *err_str(enum err e)
{
  if ((unsigned)e >= ERR__COUNT)
    return "unknown error";
  return err_msgs[e];
}

const char *err_name(enum err e)
{
  if ((unsigned)e >= ERR__COUNT)
    return "UNKNOWN";
  return err_names[e];
}
