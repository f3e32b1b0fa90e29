/*
 * camgate's broker policy plugin for Mosquitto 2.0 (docs/broker.md, "The policy plugin").
 *
 * Mosquitto's acl_file cannot say two things camgate needs (2.0.11, src/security_default.c):
 *   - it grants every SUBSCRIBE ("FIXME - implement ACL subscription strings") and checks read access
 *     only at delivery. A camera that subscribes to the gateway's $share/<group>/... filter joins the
 *     group and is handed its share of every camera's messages, which the broker then drops because the
 *     camera may not read them: silent loss for everyone.
 *   - it has no notion of the retain flag. A camera's retained uplink message is replayed to the gateway
 *     on every subscribe, outlives the camera's account and grows the database saved every second.
 *
 * So, for every client that is not a gateway account (username "camgate-<suffix>": camera usernames
 * are upper-case serials, and camgate refuses to render a camera account named so):
 *   - SUBSCRIBE to a $share/... filter is refused (SUBACK 0x80 for 3.1.1, 0x87 for MQTT 5);
 *   - a PUBLISH (or last will) with the retain flag is refused (MQTT 5 gets PUBACK 0x87; 3.1.1 a PUBACK
 *     with nothing behind it): nothing is retained, nothing is delivered.
 * A gateway account may, beyond its acl_file grants, publish an *empty* retained message on a camera's
 * uplink topics: that deletes a retained message planted there before this plugin was loaded, and
 * cannot carry anything forged (an empty alert or status is dead-lettered).
 * Everything else is deferred to the acl_file, which still decides topics.
 *
 * Build: gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o camgate_policy.so camgate_policy.c
 * (Debian: apt-get install gcc mosquitto-dev libmosquitto-dev). Load it with `plugin <path>` in
 * mosquitto.conf, before the listeners.
 */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define GATEWAY_PREFIX "camgate-"
#define SHARE_PREFIX "$share/"

static mosquitto_plugin_id_t *plugin_id = NULL;

static bool is_gateway(const struct mosquitto *client)
{
	const char *username = mosquitto_client_username(client);
	size_t n = strlen(GATEWAY_PREFIX);

	return username != NULL && strncmp(username, GATEWAY_PREFIX, n) == 0 && username[n] != '\0';
}

static bool is_uplink(const char *topic)
{
	static const char *const uplink[] = {"cam/+/alert", "cam/+/status", "cam/+/clip/+"};
	bool match;

	for(size_t i = 0; i < sizeof(uplink) / sizeof(uplink[0]); i++){
		if(mosquitto_topic_matches_sub(uplink[i], topic, &match) == MOSQ_ERR_SUCCESS && match){
			return true;
		}
	}
	return false;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event;
	(void)userdata;

	if(is_gateway(ed->client)){
		if(ed->access == MOSQ_ACL_WRITE && ed->retain && ed->payloadlen == 0 && is_uplink(ed->topic)){
			return MOSQ_ERR_SUCCESS;
		}
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(ed->access == MOSQ_ACL_SUBSCRIBE && strncmp(ed->topic, SHARE_PREFIX, strlen(SHARE_PREFIX)) == 0){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "camgate policy: refused shared subscription %s for %s",
				ed->topic, mosquitto_client_username(ed->client));
		return MOSQ_ERR_ACL_DENIED;
	}
	if(ed->access == MOSQ_ACL_WRITE && ed->retain){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "camgate policy: refused retained publish on %s from %s",
				ed->topic, mosquitto_client_username(ed->client));
		return MOSQ_ERR_ACL_DENIED;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
}
