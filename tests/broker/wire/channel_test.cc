#include "broker/wire/channel.h"
