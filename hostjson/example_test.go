package hostjson_test

import (
	"fmt"
	"strings"

	"github.com/taskhub/taskhub/hostjson"
)

func ExampleLoad() {
	const hostJSON = `{
  "version": "2.0",
  "extensions": {
    "durableTask": {
      "hubName": "OrdersHub",
      "storageProvider": {
        "connectionStringName": "AzureWebJobsStorage",
        "partitionCount": 8,
        "controlQueueVisibilityTimeout": "00:02:00", // comments are fine
      },
      "maxConcurrentActivityFunctions": 16
    }
  }
}`
	cfg, warnings, err := hostjson.Load(strings.NewReader(hostJSON))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Shape, cfg.HubName, cfg.Worker.PartitionCount,
		cfg.Worker.ControlQueueVisibilityTimeout, cfg.Worker.MaxConcurrentActivityFunctions)
	for _, w := range warnings {
		fmt.Println(w)
	}
	// Output:
	// 2.x OrdersHub 8 2m0s 16
	// line 7: extensions.durableTask.storageProvider.connectionStringName: ignored: taskhub keeps the hub in its own backend, not in Azure Storage
}

func ExampleLoad_errors() {
	const hostJSON = `{"version": "2.0", "extensions": {"durableTask": {
  "storageProvider": {"partitionCount": 32, "controlQueueBatchSize": 64}
}}}`
	_, _, err := hostjson.Load(strings.NewReader(hostJSON))
	fmt.Println(err)
	// Output:
	// 2:41: extensions.durableTask.storageProvider.partitionCount: 32 is out of range; allowed: 1 to 16 (Durable Functions' limit; fixed when the hub is created)
	// 2:70: extensions.durableTask.storageProvider.controlQueueBatchSize: 64 is out of range; allowed: 1 to 32 (an Azure Storage queue returns at most 32 messages per receive)
}
